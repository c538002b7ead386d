package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// shapedModel writes a checkpoint of named float tensors with shapes.
func shapedModel(t testing.TB, path string, dt tensors.DType, shapes map[string][]int64, vals map[string][]float32) {
	t.Helper()
	var entries []safetensors.Entry
	for n, s := range shapes {
		entries = append(entries, safetensors.Entry{Name: n, DType: dt, Shape: s})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals[e.Name])
		return x, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), path, entries, produce, checkpoint.WriteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
}

// readRaw returns the bytes of a tensor of a checkpoint.
func readRaw(t testing.TB, path, name string) ([]byte, tensors.DType) {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), x.Data...), x.DType
}

// encodeOnce rounds float64 values once to dt (tensors.EncodeFloat64).
func encodeOnce(t testing.TB, v []float64, dt tensors.DType) []byte {
	b := make([]byte, len(v)*dt.Bits()/8)
	if err := tensors.EncodeFloat64(b, v, dt); err != nil {
		t.Fatal(err)
	}
	return b
}

// roundTrip returns the values as stored in dt.
func roundTrip(v []float32, dt tensors.DType) []float32 {
	x, _ := tensors.FromFloat32("", dt, []int64{int64(len(v))}, v)
	out, _ := x.Float32()
	return out
}

func firstDiff(t testing.TB, got, want []byte, dt tensors.DType) string {
	es := dt.Bits() / 8
	for i := 0; i < len(got); i += es {
		if string(got[i:i+es]) != string(want[i:i+es]) {
			g := make([]float64, 1)
			w := make([]float64, 1)
			tensors.DecodeFloat64(g, got[i:i+es], dt)
			tensors.DecodeFloat64(w, want[i:i+es], dt)
			return fmt.Sprintf("element %d: %v, want %v", i/es, g[0], w[0])
		}
	}
	return fmt.Sprintf("lengths %d, %d", len(got), len(want))
}

// TestStreamingEqualsWholeTensor merges checkpoints whose largest tensor
// spans several writer chunks, with the top-k selection forced through its
// histogram, gather and tie-counting passes, and compares every output byte
// with the old whole-tensor implementations (kept in legacy_test.go),
// rounded once to the output dtype: TIES and DARE (its masks given by the
// documented per-element generator), linear and task arithmetic (the fused
// affine kernel), wm, Fisher. SLERP's norms are summed block by block
// instead of sequentially; the test bounds that difference.
func TestStreamingEqualsWholeTensor(t *testing.T) {
	defer func(c int) { gatherCap = c }(gatherCap)
	gatherCap = 5000 // force histogram passes
	r := rand.New(rand.NewPCG(11, 12))
	dir := t.TempDir()
	shapes := map[string][]int64{
		"layers.0.w":    {1100, 1000}, // 1.1M elements: 2 chunks in f32
		"layers.1.w":    {300, 50},    // integers: many ties
		"layers.1.bias": {300},        // mostly unchanged from the base: d = 0
		"norm":          {7},
	}
	gen := func(shift float64) map[string][]float32 {
		v := map[string][]float32{}
		for n, s := range shapes {
			k := int(s[0])
			if len(s) > 1 {
				k *= int(s[1])
			}
			x := make([]float32, k)
			for i := range x {
				switch n {
				case "layers.1.w":
					x[i] = float32(r.IntN(9) - 4)
				case "layers.1.bias":
					x[i] = 1
					if r.IntN(10) == 0 {
						x[i] = float32(r.IntN(5)) + float32(shift)
					}
				default:
					x[i] = float32(r.NormFloat64() + shift)
				}
			}
			v[n] = x
		}
		return v
	}
	va, vb, vc, vbase := gen(0.1), gen(-0.2), gen(0.3), gen(0)
	for k, v := range vbase {
		if k == "layers.1.bias" {
			for i := range v {
				v[i] = 1
			}
		}
	}
	pa, pb, pc, pbase := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c"), filepath.Join(dir, "base")
	for _, dt := range []tensors.DType{tensors.F32, tensors.BF16} {
		shapedModel(t, pa, dt, shapes, va)
		shapedModel(t, pb, dt, shapes, vb)
		shapedModel(t, pc, dt, shapes, vc)
		shapedModel(t, pbase, dt, shapes, vbase)
		// the inputs as stored
		in := func(v map[string][]float32, name string) []float32 { return roundTrip(v[name], dt) }
		w := []float64{1, 0.7, 1.3}
		dens := []float64{0.3, 0.55, 0.9}
		models := []ModelInput{
			{Path: pa, Params: Params{"weight": Num(w[0]), "density": Num(dens[0])}},
			{Path: pb, Params: Params{"weight": Num(w[1]), "density": Num(dens[1])}},
			{Path: pc, Params: Params{"weight": Num(w[2]), "density": Num(dens[2])}},
		}
		cases := []struct {
			method string
			params Params
			want   func(name string) ([]float64, bool) // float64 values rounded once; false: the affine float32 path
		}{
			{"ties", Params{"lambda": Num(0.8)}, func(name string) ([]float64, bool) {
				o := TaskVectorOptions{Weights: w, Densities: dens, Sparsify: Magnitude, Consensus: true, Normalize: true, Lambda: 0.8}
				return legacyTaskVectors(in(vbase, name), [][]float32{in(va, name), in(vb, name), in(vc, name)}, o, nil), true
			}},
			{"dare-ties", Params{"seed": IntValue(5), "rescale": Text("inverse")}, func(name string) ([]float64, bool) {
				return legacyDAREMerge(in, name, va, vb, vc, vbase, w, dens, RescaleInverse, true, 5), true
			}},
			{"dare-linear", Params{"seed": IntValue(6), "rescale": Text("l1")}, func(name string) ([]float64, bool) {
				return legacyDAREMerge(in, name, va, vb, vc, vbase, w, dens, RescaleL1, false, 6), true
			}},
			{"linear", nil, func(name string) ([]float64, bool) { return nil, false }},
			{"task-arithmetic", Params{"lambda": Num(0.5)}, func(name string) ([]float64, bool) { return nil, false }},
		}
		for _, c := range cases {
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%s.safetensors", c.method, dt))
			p := &Plan{Method: c.method, Models: models, Base: pbase, Params: c.params}
			if c.method == "linear" || c.method == "task-arithmetic" {
				p.Models = nil
				for i, m := range models {
					p.Models = append(p.Models, ModelInput{Path: m.Path, Params: Params{"weight": Num(w[i])}})
				}
			}
			if c.method == "linear" {
				p.Base = ""
			}
			if _, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{}); err != nil {
				t.Fatalf("%s %s: %v", c.method, dt, err)
			}
			for name := range shapes {
				got, odt := readRaw(t, out, name)
				want, ok := c.want(name)
				var wantBytes []byte
				if ok {
					wantBytes = encodeOnce(t, want, odt)
				} else {
					wantBytes = affineReference(t, c.method, in, name, va, vb, vc, vbase, w, 0.5, odt)
				}
				if string(got) != string(wantBytes) {
					t.Errorf("%s %s tensor %s differs from the whole-tensor result: %s", c.method, dt, name, firstDiff(t, got, wantBytes, odt))
				}
			}
		}
		// slerp: blocked sums against sequential ones
		out := filepath.Join(dir, fmt.Sprintf("out-slerp-%s.safetensors", dt))
		p := &Plan{Method: "slerp", Models: []ModelInput{{Path: pa}, {Path: pb}}, Params: Params{"t": Num(0.3)}}
		if _, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		for name := range shapes {
			got, odt := readRaw(t, out, name)
			a, b := in(va, name), in(vb, name)
			// the exported whole-tensor Slerp sums the same way: identical
			same := make([]float32, len(a))
			if err := Slerp(same, a, b, 0.3); err != nil {
				t.Fatal(err)
			}
			if odt == tensors.F32 {
				if want := f32bytes(same); string(got) != string(want) {
					t.Errorf("slerp %s: streaming differs from Slerp: %s", name, firstDiff(t, got, want, odt))
				}
			}
			// the old sequential sums: within one unit in the last place
			want := legacySlerp(a, b, 0.3)
			gv := make([]float64, len(want))
			tensors.DecodeFloat64(gv, got, odt)
			ulp := math.Pow(2, -23)
			if odt == tensors.BF16 {
				ulp = math.Pow(2, -7)
			}
			for i := range want {
				if math.Abs(gv[i]-want[i]) > ulp*math.Abs(want[i])+1e-30 {
					t.Fatalf("slerp %s %s element %d: %v vs sequential sums %v", dt, name, i, gv[i], want[i])
				}
			}
		}
	}
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// legacyDAREMerge is the old whole-tensor DARE with the per-element masks.
func legacyDAREMerge(in func(map[string][]float32, string) []float32, name string, va, vb, vc, vbase map[string][]float32,
	w, dens []float64, rescale Rescale, consensus bool, seed uint64) []float64 {
	models := [][]float32{in(va, name), in(vb, name), in(vc, name)}
	var keys []uint64
	for _, x := range models {
		keys = append(keys, MaskKey(seed, name, memValuesHash(x)))
	}
	o := TaskVectorOptions{Weights: w, Densities: dens, Sparsify: Random, Rescale: rescale, Consensus: consensus}
	return legacyTaskVectors(in(vbase, name), models, o, func(i int, d []float64) { legacyDARE(d, dens[i], rescale, keys[i]) })
}

// memValuesHash is ValuesHash over values in memory: the blocks of a
// sample (every stride-th, up to sampleBlocks), written out.
func memValuesHash(x []float32) uint64 {
	nb := (len(x) + BlockSize - 1) / BlockSize
	stride := max(1, nb/sampleBlocks)
	h := uint64(len(x)) ^ 0x5a3c
	v := make([]float64, BlockSize)
	for blk := 0; blk < nb; blk += stride {
		lo := blk * BlockSize
		m := min(BlockSize, len(x)-lo)
		for i := range m {
			v[i] = float64(x[lo+i])
		}
		h = splitmix64(h ^ hashBlock(v[:m]))
	}
	return h
}

// affineReference is today's fused affine kernel written out: coefficients
// c_i = w_i / sum w (linear) or lambda w_i and 1 - sum for the base (task
// arithmetic), float32 arithmetic for 16-bit outputs, float64 otherwise.
func affineReference(t testing.TB, method string, in func(map[string][]float32, string) []float32, name string,
	va, vb, vc, vbase map[string][]float32, w []float64, lambda float64, dt tensors.DType) []byte {
	xs := [][]float32{in(va, name), in(vb, name), in(vc, name)}
	var coef []float64
	switch method {
	case "linear":
		var s float64
		for _, x := range w {
			s += x
		}
		for _, x := range w {
			coef = append(coef, x*(1/s))
		}
	case "task-arithmetic":
		cb := 1.0
		for _, x := range w {
			c := lambda * x / 1
			coef = append(coef, c)
			cb -= c
		}
		coef = append(coef, cb)
		xs = append(xs, in(vbase, name))
	}
	n := len(xs[0])
	if dt == tensors.BF16 {
		out := make([]float32, n)
		for i, x := range xs {
			for e := range out {
				out[e] += float32(coef[i]) * x[e]
			}
		}
		b := make([]byte, 2*n)
		tensors.EncodeFloat32(b, out, dt)
		return b
	}
	out := make([]float64, n)
	for i, x := range xs {
		for e := range out {
			out[e] += coef[i] * float64(x[e])
		}
	}
	o32 := make([]float32, n)
	for e, v := range out {
		o32[e] = float32(v)
	}
	return f32bytes(o32)
}

const demoDir = "../testdata/demo"

// TestStreamingAlignedFisherRegMean: wm reads the models through their
// permutations block by block; the result is the old one (each tensor
// permuted whole, then averaged) byte for byte. Fisher's floor comes from
// sums taken block by block, RegMean solves fixed blocks of output rows
// (forced down to one row each here): both equal the whole-tensor results
// to float32 rounding.
func TestStreamingAlignedFisherRegMean(t *testing.T) {
	if _, err := os.Stat(demoDir + "/mlp-a"); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	ctx := context.Background()
	a, b := demoDir+"/mlp-a", demoDir+"/mlp-b"
	two := []ModelInput{{Path: a, Params: Params{"weight": Num(1)}}, {Path: b, Params: Params{"weight": Num(3)}}}
	ma, _ := checkpoint.Open(a)
	defer ma.Close()
	mb, _ := checkpoint.Open(b)
	defer mb.Close()
	floats := func(m *checkpoint.Model, name string) []float32 {
		x, err := m.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := x.Float32()
		return v
	}

	// wm
	out := filepath.Join(dir, "wm.safetensors")
	if _, err := Execute(ctx, &Plan{Method: "wm", Models: two}, out, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	spec, _ := permute.BuiltinSpec("auto", ma, nil)
	res, err := permute.WeightMatching(ctx, spec, permute.NewCheckpointSource(ma, 0), permute.NewCheckpointSource(mb, 0), permute.MatchOptions{Restarts: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range ma.Names() {
		tb, _ := mb.Tensor(name)
		pb, err := spec.Apply(tb, res.Perms)
		if err != nil {
			t.Fatal(err)
		}
		vb, _ := pb.Float32()
		want := encodeOnce(t, legacyLinear([][]float32{floats(ma, name), vb}, []float64{1, 3}, true), tensors.F32)
		if got, dt := readRaw(t, out, name); string(got) != string(want) {
			t.Errorf("wm %s: %s", name, firstDiff(t, got, want, dt))
		}
	}

	// fisher, with random Fisher files (some entries zero)
	r := rand.New(rand.NewPCG(3, 4))
	fishers := map[string][][]float32{}
	var fpaths []string
	for i, m := range []*checkpoint.Model{ma, mb} {
		var ts []*tensors.Tensor
		for _, name := range m.Names() {
			info, _ := m.Info(name)
			n, _ := tensors.NumElements(info.Shape)
			v := make([]float32, n)
			for k := range v {
				if r.IntN(4) > 0 {
					v[k] = float32(r.ExpFloat64())
				}
			}
			fishers[name] = append(fishers[name], v)
			x, _ := tensors.FromFloat32(name, tensors.F32, info.Shape, v)
			ts = append(ts, x)
		}
		p := filepath.Join(dir, fmt.Sprintf("f%d.safetensors", i))
		if err := fisher.Write(ctx, p, ts, fisher.Meta{}, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		fpaths = append(fpaths, p)
	}
	out = filepath.Join(dir, "fisher.safetensors")
	fm := []ModelInput{{Path: a, Params: Params{"fisher": Text(fpaths[0]), "weight": Num(1)}}, {Path: b, Params: Params{"fisher": Text(fpaths[1]), "weight": Num(2)}}}
	if _, err := Execute(ctx, &Plan{Method: "fisher", Models: fm}, out, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range ma.Names() {
		want := legacyFisher([][]float32{floats(ma, name), floats(mb, name)}, fishers[name], []float64{1, 2})
		got := read(t, out, name)
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > 1.2e-7*math.Abs(want[i])+1e-30 {
				t.Fatalf("fisher %s element %d: %v, whole-tensor %v", name, i, got[i], want[i])
			}
		}
	}

	// regmean, one output row per solve
	defer func(v int) { regmeanBlockValues = v }(regmeanBlockValues)
	regmeanBlockValues = 1
	out = filepath.Join(dir, "regmean.safetensors")
	calib := demoDir + "/digits_train.safetensors"
	if _, err := Execute(ctx, &Plan{Method: "regmean", Models: two, Params: Params{"calib": Text(calib)}}, out, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	in, _ := mlp.OpenInputs(calib, "")
	defer in.Close()
	var sts []*stats.Stats
	for _, m := range []*checkpoint.Model{ma, mb} {
		n, _ := mlp.Load(m, nil, mlp.ReLU)
		s, err := mlp.CollectStats(ctx, []*mlp.Network{n}, in, mlp.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, s)
	}
	for _, mod := range []string{"fc1", "fc2", "fc5"} {
		info, _ := ma.Info(mod + ".weight")
		o, d := int(info.Shape[0]), int(info.Shape[1])
		var ws, gs [][]float64
		for i, m := range []*checkpoint.Model{ma, mb} {
			w, bias := floats(m, mod+".weight"), floats(m, mod+".bias")
			st := sts[i].Module(mod)
			wa := make([]float64, o*(d+1))
			ga := make([]float64, (d+1)*(d+1))
			wt := []float64{1, 3}[i]
			for r := range o {
				for c := range d {
					wa[r*(d+1)+c] = float64(w[r*d+c])
				}
				wa[r*(d+1)+d] = float64(bias[r])
			}
			for x := range d {
				for y := range d {
					ga[x*(d+1)+y] = wt * st.Gram[x*d+y]
				}
				ga[x*(d+1)+d], ga[d*(d+1)+x] = wt*st.Sum[x], wt*st.Sum[x]
			}
			ga[d*(d+1)+d] = wt * float64(st.Count)
			ws, gs = append(ws, wa), append(gs, ga)
		}
		sol, err := RegMean(ws, gs, o, d+1, DefaultRegMeanAlpha, 0)
		if err != nil {
			t.Fatal(err)
		}
		gw, gb := read(t, out, mod+".weight"), read(t, out, mod+".bias")
		for r := range o {
			for c := range d + 1 {
				want := sol[r*(d+1)+c]
				got := float64(gb[r])
				if c < d {
					got = float64(gw[r*d+c])
				}
				if math.Abs(got-want) > 1e-6*(1+math.Abs(want)) {
					t.Fatalf("regmean %s row %d column %d: %v, whole-layer solve %v", mod, r, c, got, want)
				}
			}
		}
	}
}
