package peft

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// TestSavedBy: modules_to_save names select module paths as PEFT's
// _set_trainable does, a plain suffix of base_model.model.<path>: "norm"
// also selects every *_layernorm, "model.norm" only the final norm.
func TestSavedBy(t *testing.T) {
	for _, tc := range []struct {
		names  []string
		module string
		want   bool
	}{
		{[]string{"norm"}, "model.norm", true},
		{[]string{"norm"}, "model.layers.0.input_layernorm", true},
		{[]string{"model.norm"}, "model.layers.0.input_layernorm", false},
		{[]string{"model.norm"}, "model.norm", true},
		{[]string{"v_proj"}, "model.layers.3.self_attn.v_proj", true},
		{[]string{"model.layers.1.self_attn.v_proj"}, "model.layers.11.self_attn.v_proj", false},
		{[]string{"lm_head"}, "lm_head", true},
		{nil, "lm_head", false},
	} {
		if got := SavedBy(tc.names, tc.module); got != tc.want {
			t.Errorf("SavedBy(%q, %q) = %v", tc.names, tc.module, got)
		}
	}
}

// TestBiasAndSavedRoundTrip: an adapter with lora_B.bias and
// modules_to_save tensors is written under PEFT's keys and read back
// equal; reading refuses a lora_B.bias without lora_bias and a tensor no
// modules_to_save name selects.
func TestBiasAndSavedRoundTrip(t *testing.T) {
	mk := func(name string, shape []int64, v ...float32) *tensors.Tensor {
		x, err := tensors.FromFloat32(name, tensors.F32, shape, v)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	build := func(loraBias bool, save []string) *Adapter {
		cfg := NewConfig(1, 1, []string{"q_proj"})
		cfg.LoraBias, cfg.ModulesToSave = loraBias, save
		q := "model.layers.0.self_attn.q_proj"
		ka, kb := KeysFor(q, false)
		return &Adapter{Config: cfg,
			Modules: map[string]*Module{q: {Name: q, A: mk(ka, []int64{1, 2}, 1, 2), B: mk(kb, []int64{2, 1}, 3, 4), Bias: mk(BiasKey(q), []int64{2}, 5, 6)}},
			Saved:   map[string]*tensors.Tensor{"model.norm.weight": mk(SavedKey("model.norm.weight"), []int64{2}, 7, 8)}}
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		loraBias bool
		save     []string
		err      string
	}{
		{"ok", true, []string{"model.norm"}, ""},
		{"short name", true, []string{"norm"}, ""},
		{"bias without lora_bias", false, []string{"model.norm"}, "lora_bias is not true"},
		{"not selected", true, []string{"input_layernorm"}, "modules_to_save"},
	} {
		out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := Write(context.Background(), out, build(tc.loraBias, tc.save), false); err != nil {
			t.Fatal(err)
		}
		ad, err := Read(out)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m := ad.Modules["model.layers.0.self_attn.q_proj"]
		b, _ := m.Bias.Float32()
		s, _ := ad.Saved["model.norm.weight"].Float32()
		if !slices.Equal(b, []float32{5, 6}) || !slices.Equal(s, []float32{7, 8}) || !ad.Config.LoraBias || !slices.Equal(ad.Config.ModulesToSave, tc.save) {
			t.Errorf("%s: read back bias %v, saved %v, config %+v", tc.name, b, s, ad.Config)
		}
		if m.Bias.Name != "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias" || ad.Saved["model.norm.weight"].Name != "base_model.model.model.norm.weight" {
			t.Errorf("%s: keys %q, %q", tc.name, m.Bias.Name, ad.Saved["model.norm.weight"].Name)
		}
	}
}
