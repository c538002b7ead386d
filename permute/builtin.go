package permute

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
)

// MLPSpec returns the spec of a chain of Linear layers (found as the MLP
// engine finds it, or in the given order): one group per hidden layer, named
// after the module whose outputs it permutes; it acts on that layer's weight
// rows and bias and on the next layer's weight columns.
func MLPSpec(shapes map[string][]int64, order []string) (*Spec, error) {
	chain, err := mlp.Chain(shapes, order)
	if err != nil {
		return nil, err
	}
	s := &Spec{Groups: map[string]int{}, Tensors: map[string][]Axis{}}
	for i, m := range chain {
		var rows, cols Axis
		if i+1 < len(chain) {
			rows = Axis{Group: m}
			s.Groups[m] = int(shapes[m+".weight"][0])
		}
		if i > 0 {
			cols = Axis{Group: chain[i-1]}
		}
		s.Tensors[m+".weight"] = []Axis{rows, cols}
		if _, ok := shapes[m+".bias"]; ok {
			s.Tensors[m+".bias"] = []Axis{rows}
		}
	}
	for t, axes := range s.Tensors {
		if axes[0].Group == "" && (len(axes) < 2 || axes[1].Group == "") {
			s.Tensors[t] = nil
		}
	}
	return s, nil
}

// LlamaConfig holds the attention shapes of a Llama-family model.
type LlamaConfig struct {
	Heads   int // num_attention_heads
	KVHeads int // num_key_value_heads (Heads without grouped-query attention)
	HeadDim int // head_dim, or hidden_size / num_attention_heads
}

// ReadLlamaConfig reads the attention shapes from a Hugging Face config.json.
func ReadLlamaConfig(path string) (*LlamaConfig, error) {
	b, err := fsafe.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c struct {
		Hidden  int `json:"hidden_size"`
		Heads   int `json:"num_attention_heads"`
		KVHeads int `json:"num_key_value_heads"`
		HeadDim int `json:"head_dim"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Heads <= 0 {
		return nil, fmt.Errorf("%s: no num_attention_heads", path)
	}
	cfg := &LlamaConfig{Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim}
	if cfg.KVHeads == 0 {
		cfg.KVHeads = c.Heads
	}
	if cfg.HeadDim == 0 {
		if c.Hidden%c.Heads != 0 {
			return nil, fmt.Errorf("%s: hidden_size %d is not a multiple of %d heads", path, c.Hidden, c.Heads)
		}
		cfg.HeadDim = c.Hidden / c.Heads
	}
	if cfg.Heads%cfg.KVHeads != 0 {
		return nil, fmt.Errorf("%s: %d heads are not a multiple of %d key/value heads", path, cfg.Heads, cfg.KVHeads)
	}
	return cfg, nil
}

var llamaLayer = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)

// llamaLayerTensors are the per-layer tensors of the family; q/k/v biases
// (Qwen2) are optional.
var llamaLayerTensors = []string{
	"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
	"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
	"input_layernorm.weight", "post_attention_layernorm.weight",
}

// LlamaSpec returns the spec of a Llama/Mistral/Qwen2-family checkpoint in
// Hugging Face naming: one residual-stream group "residual" acting on the
// embeddings, every projection's input columns, o_proj and down_proj rows,
// every norm and lm_head's columns; per layer N a group "layers.N.mlp" over
// the MLP's hidden units (gate/up rows, down columns) and, when cfg is given,
// a group "layers.N.heads" over the key/value heads: a kv head moves with the
// query heads that share it (grouped-query attention), whole heads at a time
// (the dimensions inside a head are tied by RoPE and stay put). Without cfg
// heads are left in place. Tied embeddings (no lm_head.weight) are supported;
// rotary inv_freq buffers are left alone.
func LlamaSpec(shapes map[string][]int64, cfg *LlamaConfig) (*Spec, error) {
	emb, ok := shapes["model.embed_tokens.weight"]
	if !ok || len(emb) != 2 {
		return nil, errors.New("no model.embed_tokens.weight [vocab, hidden]: not a Llama-family checkpoint")
	}
	hidden := int(emb[1])
	s := &Spec{Groups: map[string]int{"residual": hidden}, Tensors: map[string][]Axis{}}
	res := Axis{Group: "residual"}
	s.Tensors["model.embed_tokens.weight"] = []Axis{{}, res}
	s.Tensors["model.norm.weight"] = []Axis{res}
	if _, ok := shapes["lm_head.weight"]; ok {
		s.Tensors["lm_head.weight"] = []Axis{{}, res}
	}
	layers := map[int]bool{}
	for name := range shapes {
		if m := llamaLayer.FindStringSubmatch(name); m != nil {
			n, _ := strconv.Atoi(m[1])
			layers[n] = true
		}
	}
	var ids []int
	for n := range layers {
		ids = append(ids, n)
	}
	sort.Ints(ids)
	for _, n := range ids {
		p := fmt.Sprintf("model.layers.%d.", n)
		for _, t := range llamaLayerTensors {
			if _, ok := shapes[p+t]; !ok {
				return nil, fmt.Errorf("layer %d has no %s%s: not a Llama-family layer", n, p, t)
			}
		}
		inter := int(shapes[p+"mlp.up_proj.weight"][0])
		mlpG := fmt.Sprintf("layers.%d.mlp", n)
		s.Groups[mlpG] = inter
		s.Tensors[p+"mlp.gate_proj.weight"] = []Axis{{Group: mlpG}, res}
		s.Tensors[p+"mlp.up_proj.weight"] = []Axis{{Group: mlpG}, res}
		s.Tensors[p+"mlp.down_proj.weight"] = []Axis{res, {Group: mlpG}}
		s.Tensors[p+"input_layernorm.weight"] = []Axis{res}
		s.Tensors[p+"post_attention_layernorm.weight"] = []Axis{res}
		var qRows, kvRows, oCols Axis
		if cfg != nil {
			heads := fmt.Sprintf("layers.%d.heads", n)
			s.Groups[heads] = cfg.KVHeads
			kvRows = Axis{Group: heads, Block: cfg.HeadDim}
			qRows = Axis{Group: heads, Block: cfg.HeadDim * cfg.Heads / cfg.KVHeads}
			oCols = qRows
		}
		s.Tensors[p+"self_attn.q_proj.weight"] = []Axis{qRows, res}
		s.Tensors[p+"self_attn.k_proj.weight"] = []Axis{kvRows, res}
		s.Tensors[p+"self_attn.v_proj.weight"] = []Axis{kvRows, res}
		s.Tensors[p+"self_attn.o_proj.weight"] = []Axis{res, oCols}
		for _, b := range []struct {
			name string
			axis Axis
		}{{"self_attn.q_proj.bias", qRows}, {"self_attn.k_proj.bias", kvRows}, {"self_attn.v_proj.bias", kvRows}} {
			if _, ok := shapes[p+b.name]; ok {
				s.Tensors[p+b.name] = []Axis{b.axis}
				if b.axis.Group == "" {
					s.Tensors[p+b.name] = nil
				}
			}
		}
		if _, ok := shapes[p+"self_attn.rotary_emb.inv_freq"]; ok {
			s.Tensors[p+"self_attn.rotary_emb.inv_freq"] = nil
		}
	}
	for name := range shapes {
		if _, ok := s.Tensors[name]; !ok {
			return nil, fmt.Errorf("tensor %q is not part of the Llama family's layout", name)
		}
	}
	return s, nil
}

// BuiltinSpec returns the spec named "mlp", "llama" or "auto" for a model;
// "auto" picks the built-in that fits (mlp, then llama) or fails naming what
// to pass instead. layers is the MLP layer order (may be nil). The Llama
// attention shapes come from config.json in the model's directory when it
// has one.
func BuiltinSpec(name string, m *checkpoint.Model, layers []string) (*Spec, error) {
	shapes := Shapes(m)
	llama := func() (*Spec, error) {
		var cfg *LlamaConfig
		if m.Dir != "" {
			p := filepath.Join(m.Dir, "config.json")
			if _, err := os.Stat(p); err == nil {
				c, err := ReadLlamaConfig(p)
				if err != nil {
					return nil, err
				}
				cfg = c
			}
		}
		return LlamaSpec(shapes, cfg)
	}
	switch name {
	case "mlp":
		return MLPSpec(shapes, layers)
	case "llama":
		return llama()
	case "auto", "":
		s, errMLP := MLPSpec(shapes, layers)
		if errMLP == nil {
			return s, nil
		}
		s, errLlama := llama()
		if errLlama == nil {
			return s, nil
		}
		return nil, fmt.Errorf("%s: no built-in permutation spec fits: not an MLP (%v), not a Llama-family model (%v); write a spec file (docs/permutation-spec.md) and pass --spec FILE.json", m.Path, errMLP, errLlama)
	}
	if strings.HasSuffix(name, ".json") {
		return ReadSpec(name)
	}
	return nil, fmt.Errorf("unknown spec %q (want auto, mlp, llama or a .json file)", name)
}
