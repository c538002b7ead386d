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

// TestSettingOr: a setting that always gives a value is kept; conditions
// without a catch-all fall back to the other setting, evaluated as mergekit
// looks a parameter up through its levels.
func TestSettingOr(t *testing.T) {
	conds := func(cs ...Cond) Setting { return Setting{Conds: cs} }
	mlp := Cond{Filter: "mlp", Value: Const(2)}
	for _, c := range []struct {
		name     string
		s, fb    Setting
		tensor   string
		depth    float64
		want     float64
		wantSome bool
	}{
		{"constant kept", Const(1), Const(5), "attn", 0, 1, true},
		{"gradient kept", Setting{Gradient: []float64{0, 1}}, Const(5), "attn", 0.25, 0.25, true},
		{"catch-all kept", conds(mlp, Cond{Value: Const(3)}), Const(5), "attn", 0, 3, true},
		{"star kept", conds(mlp, Cond{Filter: "*", Value: Const(3)}), Const(5), "attn", 0, 3, true},
		{"match wins", conds(mlp), Const(5), "mlp.up", 0, 2, true},
		{"constant fallback", conds(mlp), Const(5), "attn", 0, 5, true},
		{"gradient fallback", conds(mlp), Setting{Gradient: []float64{0, 4}}, "attn", 0.5, 2, true},
		{"conditions fallback", conds(mlp), conds(Cond{Filter: "attn", Value: Const(7)}), "self_attn.q", 0, 7, true},
		{"no level matches", conds(mlp), conds(Cond{Filter: "attn", Value: Const(7)}), "norm", 0, 0, false},
		{"no fallback", conds(mlp), Setting{}, "attn", 0, 0, false},
	} {
		got, ok := c.s.Or(c.fb).Eval(c.tensor, c.depth)
		if ok != c.wantSome || got != c.want {
			t.Errorf("%s: %g, %v; want %g, %v", c.name, got, ok, c.want, c.wantSome)
		}
	}
	// s itself is not modified
	s := conds(mlp)
	_ = s.Or(Const(5))
	if len(s.Conds) != 1 {
		t.Errorf("Or modified its receiver: %v", s)
	}
}
