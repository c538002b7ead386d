package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/io/arch"
)

// naiveAttention is softmax(q k^T / sqrt(d) + mask) v in float64, one query
// at a time.
func naiveAttention(q, k, v []float32, n, t, heads, kv, hd int, causal bool, window int) []float64 {
	out := make([]float64, n*t*heads*hd)
	for b := range n {
		for h := range heads {
			g := h / (heads / kv)
			for i := range t {
				var w []float64
				m := math.Inf(-1)
				for j := range t {
					if (causal && j > i) || (window > 0 && j < i-window+1) {
						w = append(w, math.Inf(-1))
						continue
					}
					var s float64
					for x := range hd {
						s += float64(q[(b*t+i)*heads*hd+h*hd+x]) * float64(k[(b*t+j)*kv*hd+g*hd+x])
					}
					s /= math.Sqrt(float64(hd))
					w = append(w, s)
					m = math.Max(m, s)
				}
				var z float64
				for j := range w {
					w[j] = math.Exp(w[j] - m)
					z += w[j]
				}
				for j := range t {
					for x := range hd {
						out[(b*t+i)*heads*hd+h*hd+x] += w[j] / z * float64(v[(b*t+j)*kv*hd+g*hd+x])
					}
				}
			}
		}
	}
	return out
}

func TestAttentionMasks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		return x
	}
	for _, tc := range []struct {
		name            string
		n, t, h, kv, hd int
		causal          bool
		window          int
	}{
		{"bidirectional", 2, 5, 4, 4, 3, false, 0},
		{"causal grouped", 2, 7, 4, 2, 4, true, 0},
		{"sliding window", 1, 9, 2, 1, 4, true, 3},
		{"one token", 3, 1, 2, 2, 2, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, k, v := rnd(tc.n*tc.t*tc.h*tc.hd), rnd(tc.n*tc.t*tc.kv*tc.hd), rnd(tc.n*tc.t*tc.kv*tc.hd)
			got := make([]float32, len(q))
			attention(got, q, k, v, tc.n, tc.t, tc.h, tc.kv, tc.hd, tc.causal, tc.window, 2)
			want := naiveAttention(q, k, v, tc.n, tc.t, tc.h, tc.kv, tc.hd, tc.causal, tc.window)
			if e := relErr(got, want); e > 1e-6 {
				t.Errorf("relative error %.3g", e)
			}
		})
	}
}

// TestRopeScaling: llama3 and linear rope_scaling give Hugging Face's
// frequencies (transformers' _compute_llama3_parameters).
func TestRopeScaling(t *testing.T) {
	at := &arch.Attention{HeadDim: 128, RopeTheta: 500000}
	cfg, _ := arch.ParseConfig([]byte(`{"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}`))
	r, err := newRope(cfg, at)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range r.invFreq {
		base := 1 / math.Pow(500000, float64(2*i)/128)
		wave := 2 * math.Pi / base
		want := base
		switch {
		case wave > 8192: // low frequencies: divided by the factor
			want = base / 8
		case wave >= 8192/4.0: // between: smooth interpolation
			s := (8192/wave - 1) / (4 - 1)
			want = (1-s)*base/8 + s*base
		}
		if math.Abs(f-want) > 1e-15*want {
			t.Fatalf("inv_freq[%d] = %g, want %g", i, f, want)
		}
	}
	cfg, _ = arch.ParseConfig([]byte(`{"rope_scaling": {"type": "linear", "factor": 4.0}}`))
	if r, err = newRope(cfg, at); err != nil || r.scale != 4 {
		t.Errorf("linear: %v %v", r, err)
	}
	cfg, _ = arch.ParseConfig([]byte(`{"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}`))
	if _, err = newRope(cfg, at); err == nil {
		t.Error("yarn accepted")
	}
}
