package merge

import (
	"regexp"
	"strconv"
	"testing"
)

// TestLayerOf compares the scanner with the regular expression it replaces.
func TestLayerOf(t *testing.T) {
	re := regexp.MustCompile(`(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.`)
	ref := func(name string) int {
		m := re.FindStringSubmatch(name)
		if m == nil {
			return -1
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n >= MaxLayers {
			return -1
		}
		return n
	}
	for _, name := range []string{
		"model.layers.12.mlp.up_proj.weight", "layers.0.w", "transformer.h.3.attn.c_attn.weight",
		"model.layers.9223372036854775807.mlp.weight", "model.layers.99999999999999999999999.x",
		"encoder.block.7.layer.0.SelfAttention.q.weight", "layers.x.3.w", "model.layers.12", "layers.12",
		"model.norm.weight", "h.1.", ".layers.2.w", "alayers.3.w", "layers..w", "layers.1a.w", "blocks.05.w",
		"model.layers.1048575.w", "model.layers.1048576.w", "",
	} {
		if got, want := LayerOf(name), ref(name); got != want {
			t.Errorf("LayerOf(%q) = %d, want %d", name, got, want)
		}
	}
}

// TestSettingEvalClamps: a gradient evaluated out of [0, 1] (a tensor
// beyond the last layer, a NaN depth) takes the end values, never panics
// (issue 11, item 6).
func TestSettingEvalClamps(t *testing.T) {
	s := Setting{Gradient: []float64{1, 2, 3}}
	for _, c := range []struct{ t, want float64 }{{-1, 1}, {0, 1}, {0.5, 2}, {1, 3}, {7, 3}, {nan(), 1}} {
		if got, _ := s.Eval("x", c.t); got != c.want {
			t.Errorf("Eval(%v) = %v, want %v", c.t, got, c.want)
		}
	}
	if d := Depth("model.layers.9223372036854775807.mlp.weight", 32); d != 0 {
		t.Errorf("an overflowing layer index has depth %v", d)
	}
}

func nan() float64 { z := 0.0; return z / z }
