package peft

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func TestConfigRoundTripKeepsUnknownFields(t *testing.T) {
	// a real PEFT config (PEFT's own experiments) with an extra field
	src := `{"alpha_pattern": {"model.layers.0.mlp.up_proj": 32}, "auto_mapping": null, "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
	 "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "layers_pattern": null,
	 "layers_to_transform": null, "lora_alpha": 64, "lora_dropout": 0.0, "modules_to_save": null, "peft_type": "LORA", "r": 32,
	 "rank_pattern": {"model.layers.0.mlp.up_proj": 16}, "revision": null, "target_modules": ["q_proj", "v_proj"],
	 "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false, "megatron_config": null}`
	var c Config
	if err := json.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if c.R != 32 || c.LoraAlpha != 64 || c.RankPattern["model.layers.0.mlp.up_proj"] != 16 || c.Scaling("model.layers.0.mlp.up_proj") != 2 || c.Scaling("other") != 2 {
		t.Errorf("%+v", c)
	}
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	json.Unmarshal(b, &back)
	_, kept := back["megatron_config"]
	if back["base_model_name_or_path"] != "meta-llama/Llama-2-7b-hf" || back["task_type"] != "CAUSAL_LM" || !kept {
		t.Errorf("fields lost: %s", b)
	}
	if err := json.Unmarshal([]byte(`{"peft_type": "IA3", "r": 8}`), &c); err == nil || !strings.Contains(err.Error(), "LoRA") {
		t.Errorf("non-LoRA config: %v", err)
	}
	c2 := Config{R: 4, LoraAlpha: 8, UseRslora: true}
	if s := c2.Scaling("x"); s != 4 { // 8 / sqrt(4)
		t.Errorf("rslora scaling %g", s)
	}
}

func TestReadRejectsMalformedAdapters(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"peft_type":"LORA","r":2,"lora_alpha":4,"target_modules":["fc"]}`), 0o644)
	a, _ := tensors.New(Key("fc", "lora_A"), tensors.F32, []int64{2, 3})
	b, _ := tensors.New(Key("fc", "lora_B"), tensors.F32, []int64{5, 3}) // should be [5, 2]
	f, _ := os.Create(filepath.Join(dir, WeightsFile))
	safetensors.Encode(f, []*tensors.Tensor{a, b}, map[string]string{"format": "pt"})
	f.Close()
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "do not chain") {
		t.Errorf("got %v", err)
	}
	good := filepath.Join(t.TempDir(), "a")
	b2, _ := tensors.New(Key("fc", "lora_B"), tensors.F32, []int64{5, 2})
	ad := &Adapter{Config: NewConfig(2, 4, []string{"fc"}), Modules: map[string]*Module{"fc": {Name: "fc", A: a, B: b2}}}
	if err := Write(context.Background(), good, ad, false); err != nil {
		t.Fatal(err)
	}
	back, err := Read(good)
	if err != nil || back.Modules["fc"].Rank() != 2 {
		t.Fatalf("%v", err)
	}
	h, _ := safetensors.ReadHeaderFile(filepath.Join(good, WeightsFile))
	if h.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", h.Metadata)
	}
	if err := Write(context.Background(), good, ad, false); err == nil {
		t.Error("an existing adapter must not be replaced without force")
	}
}

// TestEmbeddingAndConvFactors: embeddings' factors are PEFT's bare
// lora_embedding_A/B parameters, a Conv2d's are 4-D; both round-trip and
// convert from PiSSA.
func TestEmbeddingAndConvFactors(t *testing.T) {
	ka, kb := KeysFor("model.embed_tokens", true)
	if ka != "base_model.model.model.embed_tokens.lora_embedding_A" || kb != "base_model.model.model.embed_tokens.lora_embedding_B" {
		t.Errorf("keys %s %s", ka, kb)
	}
	mk := func(name string, shape []int64, seed float32) *tensors.Tensor {
		n, _ := tensors.NumElements(shape)
		v := make([]float32, n)
		for i := range v {
			v[i] = seed + float32(i)
		}
		x, _ := tensors.FromFloat32(name, tensors.F32, shape, v)
		return x
	}
	a := &Adapter{Config: NewConfig(2, 4, []string{"embed_tokens", "conv"}), Modules: map[string]*Module{
		"embed_tokens": {Name: "embed_tokens", Embedding: true, A: mk("a", []int64{2, 10}, 0), B: mk("b", []int64{3, 2}, 1)},
		"conv":         {Name: "conv", A: mk("a", []int64{2, 3, 3, 3}, 0), B: mk("b", []int64{5, 2, 1, 1}, 1)},
	}}
	dir := filepath.Join(t.TempDir(), "ad")
	if err := Write(context.Background(), dir, a, false); err != nil {
		t.Fatal(err)
	}
	back, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if e := back.Modules["embed_tokens"]; e == nil || !e.Embedding || e.Rank() != 2 {
		t.Fatalf("embedding module %+v", e)
	}
	lora, err := ConvertPiSSA(back, back)
	if err != nil {
		t.Fatal(err)
	}
	c := lora.Modules["conv"]
	if !slices.Equal(c.A.Shape, []int64{4, 3, 3, 3}) || !slices.Equal(c.B.Shape, []int64{5, 4, 1, 1}) || !lora.Modules["embed_tokens"].Embedding {
		t.Errorf("converted conv %v %v", c.A.Shape, c.B.Shape)
	}
	if lora.Config.Extra["base_model_name_or_path"] != nil {
		t.Errorf("converted adapter names a base model: %v", lora.Config.Extra["base_model_name_or_path"])
	}
}
