package arch_test

import (
	"fmt"

	"github.com/wtool/wtool/io/arch"
)

// A GPT-2 block as the released checkpoint names it: its Conv1D weights
// are stored [in, out], and ToMatrix gives them in the module's orientation.
func Example() {
	shapes := map[string][]int64{
		"wte.weight": {50, 4}, "wpe.weight": {8, 4}, "ln_f.weight": {4}, "ln_f.bias": {4},
		"h.0.ln_1.weight": {4}, "h.0.ln_1.bias": {4}, "h.0.ln_2.weight": {4}, "h.0.ln_2.bias": {4},
		"h.0.attn.c_attn.weight": {4, 12}, "h.0.attn.c_attn.bias": {12},
		"h.0.attn.c_proj.weight": {4, 4}, "h.0.attn.c_proj.bias": {4},
		"h.0.mlp.c_fc.weight": {4, 16}, "h.0.mlp.c_fc.bias": {16},
		"h.0.mlp.c_proj.weight": {16, 4}, "h.0.mlp.c_proj.bias": {4},
	}
	cfg, _ := arch.ParseConfig([]byte(`{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_head": 2}`))
	a, err := arch.Describe(cfg, shapes)
	if err != nil {
		panic(err)
	}
	fmt.Println(a.Family, a.Layers, "layer(s),", a.Attention.Heads, "heads of", a.Attention.HeadDim)
	for _, m := range a.DefaultTargets() {
		out, in := m.MatrixShape()
		fmt.Printf("%s: %s %s, stored %v, matrix [%d, %d], %s -> %s, PEFT %s\n", m.Name, m.Kind, m.Role, m.Weight().Shape, out, in, m.In, m.Out, a.PEFTModule(m.Name))
	}
	qkv, _ := a.Space("layers.0.attn.qkv")
	fmt.Println("c_attn writes", qkv.Parts)
	c, _ := a.Module("h.0.attn.c_proj")
	w, _ := arch.ToMatrix(c, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	fmt.Println("c_proj's [out, in] matrix, row 0:", w[:4])
	// Output:
	// gpt2 1 layer(s), 2 heads of 2
	// h.0.attn.c_attn: conv1d attn_qkv, stored [4 12], matrix [12, 4], residual -> layers.0.attn.qkv, PEFT transformer.h.0.attn.c_attn
	// h.0.attn.c_proj: conv1d attn_out, stored [4 4], matrix [4, 4], layers.0.attn.out -> residual, PEFT transformer.h.0.attn.c_proj
	// h.0.mlp.c_fc: conv1d mlp_up, stored [4 16], matrix [16, 4], residual -> layers.0.mlp.hidden, PEFT transformer.h.0.mlp.c_fc
	// h.0.mlp.c_proj: conv1d mlp_down, stored [16 4], matrix [4, 16], layers.0.mlp.hidden -> residual, PEFT transformer.h.0.mlp.c_proj
	// c_attn writes [layers.0.attn.q layers.0.attn.k layers.0.attn.v]
	// c_proj's [out, in] matrix, row 0: [0 4 8 12]
}
