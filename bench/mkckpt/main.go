// Command mkckpt writes synthetic checkpoints for wtool's benchmarks: random
// weights of a chosen dtype, either N equal matrices or a Llama-shaped model.
//
//	go run ./bench/mkckpt -o /tmp/f32.safetensors -n 32 -rows 4096 -cols 2048 -dtype f32
//	go run ./bench/mkckpt -o /tmp/llama -llama -layers 8 -hidden 2048 -inter 5632 -dtype bf16
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func main() {
	out := flag.String("o", "", "output file (.safetensors) or directory")
	n := flag.Int("n", 32, "number of matrices (plain layout)")
	rows := flag.Int("rows", 4096, "rows of each matrix (plain layout)")
	cols := flag.Int("cols", 2048, "columns of each matrix (plain layout)")
	dtype := flag.String("dtype", "f32", "dtype: f32, f16, bf16")
	seed := flag.Uint64("seed", 1, "random seed")
	llama := flag.Bool("llama", false, "write a Llama-shaped model instead")
	layers := flag.Int("layers", 8, "llama: decoder layers")
	hidden := flag.Int("hidden", 2048, "llama: hidden size")
	inter := flag.Int("inter", 5632, "llama: intermediate size")
	heads := flag.Int("heads", 16, "llama: attention heads")
	kvHeads := flag.Int("kv-heads", 4, "llama: key/value heads")
	vocab := flag.Int("vocab", 1024, "llama: vocabulary size")
	shard := flag.String("max-shard-size", "5GB", "shard limit for a directory output")
	name := flag.String("name", "", "plain layout with -n 1: the tensor's name (e.g. x for a calibration set)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "mkckpt: -o is required")
		os.Exit(2)
	}
	dt, err := tensors.ParseUserDType(*dtype)
	check(err)
	var entries []safetensors.Entry
	add := func(name string, shape ...int64) {
		entries = append(entries, safetensors.Entry{Name: name, DType: dt, Shape: shape})
	}
	if *llama {
		h, i, hd := int64(*hidden), int64(*inter), int64(*hidden / *heads)
		kv := int64(*kvHeads) * hd
		add("model.embed_tokens.weight", int64(*vocab), h)
		add("model.norm.weight", h)
		add("lm_head.weight", int64(*vocab), h)
		for l := range *layers {
			p := fmt.Sprintf("model.layers.%d.", l)
			add(p+"self_attn.q_proj.weight", h, h)
			add(p+"self_attn.k_proj.weight", kv, h)
			add(p+"self_attn.v_proj.weight", kv, h)
			add(p+"self_attn.o_proj.weight", h, h)
			add(p+"mlp.gate_proj.weight", i, h)
			add(p+"mlp.up_proj.weight", i, h)
			add(p+"mlp.down_proj.weight", h, i)
			add(p+"input_layernorm.weight", h)
			add(p+"post_attention_layernorm.weight", h)
		}
	} else {
		for k := range *n {
			nm := fmt.Sprintf("layers.%03d.weight", k)
			if *name != "" && *n == 1 {
				nm = *name
			}
			add(nm, int64(*rows), int64(*cols))
		}
	}
	limit, err := checkpoint.ParseSize(*shard)
	check(err)
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		r := rand.New(rand.NewPCG(*seed, uint64(len(e.Name))*7919+uint64(e.Shape[0])))
		ne, _ := tensors.NumElements(e.Shape)
		vals := make([]float32, ne)
		scale := float32(0.02)
		if len(e.Shape) == 1 {
			for j := range vals {
				vals[j] = 1 + 0.1*float32(r.NormFloat64())
			}
		} else {
			for j := range vals {
				vals[j] = scale * float32(r.NormFloat64())
			}
		}
		t, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals)
		return t, nil, err
	}
	if *llama && !checkpoint.IsSingleFile(*out) {
		os.MkdirAll(*out, 0o755)
	}
	opts := checkpoint.WriteOptions{MaxShardSize: limit, Force: true, Metadata: map[string]string{"format": "pt"}}
	if *llama && !checkpoint.IsSingleFile(*out) {
		cfg := fmt.Sprintf(`{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":%d,"intermediate_size":%d,"num_attention_heads":%d,"num_key_value_heads":%d,"num_hidden_layers":%d,"vocab_size":%d,"rms_norm_eps":1e-06,"rope_theta":10000.0,"tie_word_embeddings":false}`,
			*hidden, *inter, *heads, *kvHeads, *layers, *vocab)
		opts.Files = map[string][]byte{"config.json": []byte(cfg + "\n")}
	}
	res, err := checkpoint.Write(context.Background(), *out, entries, produce, opts)
	check(err)
	fmt.Printf("wrote %s: %d tensors, %d bytes\n", res.Path, res.Tensors, res.TotalSize)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkckpt:", err)
		os.Exit(1)
	}
}
