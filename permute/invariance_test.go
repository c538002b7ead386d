package permute

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// weights is a model in memory for the reference forward passes below.
type weights map[string]*tensors.Tensor

func (w weights) shapes() map[string][]int64 {
	out := map[string][]int64{}
	for n, t := range w {
		out[n] = t.Shape
	}
	return out
}

func (w weights) f(name string) []float32 {
	v, err := w[name].Float32()
	if err != nil {
		panic(err)
	}
	return v
}

func randomTensor(r *rand.Rand, name string, dt tensors.DType, scale float64, shape ...int64) *tensors.Tensor {
	n, _ := tensors.NumElements(shape)
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(scale * r.NormFloat64())
	}
	t, err := tensors.FromFloat32(name, dt, shape, v)
	if err != nil {
		panic(err)
	}
	return t
}

// randomPerms draws a random permutation for every group.
func randomPerms(r *rand.Rand, s *Spec) Perms { return RandomPerms(r, s) }

func permuteAll(t *testing.T, s *Spec, w weights, p Perms) weights {
	t.Helper()
	out := weights{}
	for n, x := range w {
		y, err := s.Apply(x, p)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = y
	}
	return out
}

// --- MLP ---------------------------------------------------------------

func mlpForward(w weights, layers []string, x []float32, in int) []float32 {
	h := x
	for l, name := range layers {
		wt := w.f(name + ".weight")
		out := len(wt) / in
		y := make([]float32, out)
		for i := range out {
			var s float64
			for j := range in {
				s += float64(wt[i*in+j]) * float64(h[j])
			}
			if b, ok := w[name+".bias"]; ok {
				bv, _ := b.Float32()
				s += float64(bv[i])
			}
			if l+1 < len(layers) {
				s = max(s, 0)
			}
			y[i] = float32(s)
		}
		h, in = y, out
	}
	return h
}

func TestMLPSpecInvariance(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, dt := range []tensors.DType{tensors.F32, tensors.BF16, tensors.F16} {
		w := weights{
			"fc1.weight": randomTensor(r, "fc1.weight", dt, 0.5, 12, 5), "fc1.bias": randomTensor(r, "fc1.bias", dt, 0.1, 12),
			"fc2.weight": randomTensor(r, "fc2.weight", dt, 0.3, 9, 12),
			"fc3.weight": randomTensor(r, "fc3.weight", dt, 0.3, 4, 9), "fc3.bias": randomTensor(r, "fc3.bias", dt, 0.1, 4),
		}
		s, err := MLPSpec(w.shapes(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(w.shapes()); err != nil {
			t.Fatal(err)
		}
		if len(s.Groups) != 2 || s.Groups["fc1"] != 12 || s.Groups["fc2"] != 9 {
			t.Fatalf("groups %v", s.Groups)
		}
		p := randomPerms(r, s)
		pw := permuteAll(t, s, w, p)
		layers := []string{"fc1", "fc2", "fc3"}
		changed := false
		for range 5 {
			x := make([]float32, 5)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			a, b := mlpForward(w, layers, x, 5), mlpForward(pw, layers, x, 5)
			for i := range a {
				if math.Abs(float64(a[i]-b[i])) > 1e-5*(1+math.Abs(float64(a[i]))) {
					t.Fatalf("%s: output %d: %v vs %v", dt, i, a[i], b[i])
				}
			}
		}
		for n := range w {
			if string(w[n].Data) != string(pw[n].Data) {
				changed = true
			}
		}
		if !changed {
			t.Fatal("the permutation changed nothing")
		}
		// the inverse permutation restores the bytes exactly, in every dtype
		back := permuteAll(t, s, pw, p.Inverse())
		for n := range w {
			if string(back[n].Data) != string(w[n].Data) {
				t.Fatalf("%s: %s not restored by the inverse", dt, n)
			}
		}
	}
}

// --- tiny Llama ------------------------------------------------------------

type llamaCfg struct {
	hidden, inter, heads, kvHeads, headDim, layers, vocab int
	tied, qkvBias                                         bool
}

func makeLlama(r *rand.Rand, c llamaCfg) weights {
	w := weights{}
	add := func(name string, scale float64, shape ...int64) {
		w[name] = randomTensor(r, name, tensors.F32, scale, shape...)
	}
	h, kv := int64(c.hidden), int64(c.kvHeads*c.headDim)
	add("model.embed_tokens.weight", 1, int64(c.vocab), h)
	if !c.tied {
		add("lm_head.weight", 0.2, int64(c.vocab), h)
	}
	norm := func(name string, n int64) {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(1 + 0.2*r.NormFloat64())
		}
		w[name], _ = tensors.FromFloat32(name, tensors.F32, []int64{n}, v)
	}
	norm("model.norm.weight", h)
	for l := range c.layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		s := 1 / math.Sqrt(float64(c.hidden))
		add(p+"self_attn.q_proj.weight", s, h, h)
		add(p+"self_attn.k_proj.weight", s, kv, h)
		add(p+"self_attn.v_proj.weight", s, kv, h)
		add(p+"self_attn.o_proj.weight", s, h, h)
		if c.qkvBias {
			add(p+"self_attn.q_proj.bias", 0.1, h)
			add(p+"self_attn.k_proj.bias", 0.1, kv)
			add(p+"self_attn.v_proj.bias", 0.1, kv)
		}
		add(p+"mlp.gate_proj.weight", s, int64(c.inter), h)
		add(p+"mlp.up_proj.weight", s, int64(c.inter), h)
		add(p+"mlp.down_proj.weight", 1/math.Sqrt(float64(c.inter)), h, int64(c.inter))
		norm(p+"input_layernorm.weight", h)
		norm(p+"post_attention_layernorm.weight", h)
	}
	return w
}

// linear computes y[t] = W x[t] (+ b) for a sequence of T vectors.
func linear(x [][]float64, wt []float32, b []float32, out int) [][]float64 {
	in := len(x[0])
	y := make([][]float64, len(x))
	for t := range x {
		y[t] = make([]float64, out)
		for i := range out {
			s := 0.0
			if b != nil {
				s = float64(b[i])
			}
			for j := range in {
				s += float64(wt[i*in+j]) * x[t][j]
			}
			y[t][i] = s
		}
	}
	return y
}

func rmsnorm(x []float64, g []float32) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+1e-6)
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = v * inv * float64(g[i])
	}
	return out
}

// rope applies Hugging Face Llama's rotary embedding (rotate_half pairing of
// dimension i with i + d/2) to one head vector at position pos.
func rope(v []float64, pos int) {
	d := len(v)
	half := d / 2
	for i := range half {
		theta := float64(pos) * math.Pow(10000, -2*float64(i)/float64(d))
		c, s := math.Cos(theta), math.Sin(theta)
		a, b := v[i], v[i+half]
		v[i], v[i+half] = a*c-b*s, b*c+a*s
	}
}

// llamaForward is a plain reference decoder: RMSNorm, RoPE, causal
// grouped-query attention, SwiGLU MLP, residual connections.
func llamaForward(w weights, c llamaCfg, tokens []int) [][]float64 {
	T := len(tokens)
	emb := w.f("model.embed_tokens.weight")
	x := make([][]float64, T)
	for t, tok := range tokens {
		x[t] = make([]float64, c.hidden)
		for i := range c.hidden {
			x[t][i] = float64(emb[tok*c.hidden+i])
		}
	}
	bias := func(name string) []float32 {
		if _, ok := w[name]; ok {
			return w.f(name)
		}
		return nil
	}
	rep := c.heads / c.kvHeads
	for l := range c.layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		n := make([][]float64, T)
		for t := range x {
			n[t] = rmsnorm(x[t], w.f(p+"input_layernorm.weight"))
		}
		q := linear(n, w.f(p+"self_attn.q_proj.weight"), bias(p+"self_attn.q_proj.bias"), c.heads*c.headDim)
		k := linear(n, w.f(p+"self_attn.k_proj.weight"), bias(p+"self_attn.k_proj.bias"), c.kvHeads*c.headDim)
		v := linear(n, w.f(p+"self_attn.v_proj.weight"), bias(p+"self_attn.v_proj.bias"), c.kvHeads*c.headDim)
		for t := range T {
			for h := range c.heads {
				rope(q[t][h*c.headDim:(h+1)*c.headDim], t)
			}
			for h := range c.kvHeads {
				rope(k[t][h*c.headDim:(h+1)*c.headDim], t)
			}
		}
		att := make([][]float64, T)
		for t := range T {
			att[t] = make([]float64, c.heads*c.headDim)
			for h := range c.heads {
				kvh := h / rep
				qv := q[t][h*c.headDim : (h+1)*c.headDim]
				scores := make([]float64, t+1)
				mx := math.Inf(-1)
				for s := 0; s <= t; s++ {
					var d float64
					for i, a := range qv {
						d += a * k[s][kvh*c.headDim+i]
					}
					scores[s] = d / math.Sqrt(float64(c.headDim))
					mx = max(mx, scores[s])
				}
				var z float64
				for s := range scores {
					scores[s] = math.Exp(scores[s] - mx)
					z += scores[s]
				}
				for s := range scores {
					for i := range c.headDim {
						att[t][h*c.headDim+i] += scores[s] / z * v[s][kvh*c.headDim+i]
					}
				}
			}
		}
		o := linear(att, w.f(p+"self_attn.o_proj.weight"), nil, c.hidden)
		for t := range T {
			for i := range c.hidden {
				x[t][i] += o[t][i]
			}
			n[t] = rmsnorm(x[t], w.f(p+"post_attention_layernorm.weight"))
		}
		g := linear(n, w.f(p+"mlp.gate_proj.weight"), nil, c.inter)
		u := linear(n, w.f(p+"mlp.up_proj.weight"), nil, c.inter)
		for t := range T {
			for i := range c.inter {
				g[t][i] = g[t][i] / (1 + math.Exp(-g[t][i])) * u[t][i]
			}
		}
		d := linear(g, w.f(p+"mlp.down_proj.weight"), nil, c.hidden)
		for t := range T {
			for i := range c.hidden {
				x[t][i] += d[t][i]
			}
		}
	}
	for t := range T {
		x[t] = rmsnorm(x[t], w.f("model.norm.weight"))
	}
	head := "lm_head.weight"
	if c.tied {
		head = "model.embed_tokens.weight"
	}
	return linear(x, w.f(head), nil, c.vocab)
}

func TestLlamaSpecInvariance(t *testing.T) {
	for _, c := range []llamaCfg{
		{hidden: 64, inter: 96, heads: 4, kvHeads: 2, headDim: 16, layers: 2, vocab: 50},
		{hidden: 64, inter: 96, heads: 4, kvHeads: 2, headDim: 16, layers: 2, vocab: 50, tied: true, qkvBias: true},
		{hidden: 64, inter: 80, heads: 4, kvHeads: 4, headDim: 16, layers: 2, vocab: 30},
	} {
		t.Run(fmt.Sprintf("kv%d_tied%v_bias%v", c.kvHeads, c.tied, c.qkvBias), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(c.kvHeads), 3))
			w := makeLlama(r, c)
			s := llamaArchSpec(t, w, c).Spec
			if err := s.Validate(w.shapes()); err != nil {
				t.Fatal(err)
			}
			if s.Groups["residual"] != c.hidden || s.Groups["layers.1.attn.heads"] != c.kvHeads || s.Groups["layers.0.mlp.hidden"] != c.inter ||
				s.Groups["layers.1.attn.vo"] != c.kvHeads*c.headDim || s.Groups["layers.1.attn.qk"] != 0 {
				t.Fatalf("groups %v", s.Groups)
			}
			p := RandomPerms(r, s)
			pw := permuteAll(t, s, w, p)
			tokens := []int{3, 17, 4, 29, 8, 1}
			a, b := llamaForward(w, c, tokens), llamaForward(pw, c, tokens)
			for tt := range a {
				for i := range a[tt] {
					if math.Abs(a[tt][i]-b[tt][i]) > 1e-4*(1+math.Abs(a[tt][i])) {
						t.Fatalf("token %d logit %d: %v vs %v", tt, i, a[tt][i], b[tt][i])
					}
				}
			}
			// a permutation that splits a head (not allowed by the spec) does
			// change the function: the check above is not vacuous
			bad := weights{}
			for n, x := range w {
				bad[n] = x
			}
			q := w["model.layers.0.self_attn.q_proj.weight"]
			sw := &Spec{Groups: map[string]int{"x": c.hidden}, Tensors: map[string][]Axis{q.Name: {{Group: "x"}, {}}}}
			bq, _ := sw.Apply(q, Perms{"x": r.Perm(c.hidden)})
			bad[q.Name] = bq
			z := llamaForward(bad, c, tokens)
			if math.Abs(z[5][0]-a[5][0]) < 1e-6 {
				t.Error("splitting heads should change the outputs")
			}
		})
	}
}

func TestSpecValidationErrors(t *testing.T) {
	shapes := map[string][]int64{"fc1.weight": {8, 4}, "fc1.bias": {8}, "fc2.weight": {3, 8}}
	s, _ := MLPSpec(shapes, nil)
	tests := []struct {
		name   string
		shapes map[string][]int64
		want   string
	}{
		{"axis size", map[string][]int64{"fc1.weight": {8, 4}, "fc1.bias": {7}, "fc2.weight": {3, 8}}, `tensor "fc1.bias" axis 0 has 7 elements`},
		{"not covered", map[string][]int64{"fc1.weight": {8, 4}, "fc1.bias": {8}, "fc2.weight": {3, 8}, "extra": {2}}, `tensor "extra" is not covered`},
		{"missing", map[string][]int64{"fc1.weight": {8, 4}, "fc2.weight": {3, 8}}, `"fc1.bias", which the model does not have`},
		{"rank", map[string][]int64{"fc1.weight": {8, 4, 1}, "fc1.bias": {8}, "fc2.weight": {3, 8}}, `tensor "fc1.weight" has 3 axes`},
	}
	for _, tc := range tests {
		if err := s.Validate(tc.shapes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := (Perms{"fc1": {0, 1, 2, 3, 4, 5, 6, 6}}).Check(s); err == nil {
		t.Error("a repeated index is not a permutation")
	}
}

func TestSpecJSONRoundTrip(t *testing.T) {
	c := llamaCfg{hidden: 8, inter: 12, heads: 2, kvHeads: 1, headDim: 4, layers: 1, vocab: 5}
	s := llamaArchSpec(t, makeLlama(rand.New(rand.NewPCG(1, 1)), c), c).Spec
	b, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Spec
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	b2, _ := back.MarshalJSON()
	if string(b) != string(b2) {
		t.Errorf("round trip differs:\n%s\n%s", b, b2)
	}
	if !strings.Contains(string(b), `{"group":"layers.0.attn.heads","block":8}`) {
		t.Errorf("block axis not written:\n%s", b)
	}
	if err := back.UnmarshalJSON([]byte(`{"groups":{"a":2},"tensors":{"x":[{"grp":"a"}]}}`)); err == nil {
		t.Error("unknown key in an axis must fail")
	}
}
