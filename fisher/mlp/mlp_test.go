package mlp

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func TestForwardHandComputed(t *testing.T) {
	// 2 -> 2 -> 2, ReLU. Layer 1: W=[[1,-1],[2,0.5]], b=[0,-1]; layer 2:
	// W=[[1,1],[-1,2]], b=[0.5,0].
	// x=[1,2]: z1 = [1-2, 2+1-1] = [-1, 2]; relu = [0, 2];
	// z2 = [0+2+0.5, 0+4] = [2.5, 4].
	n := &Network{Act: ReLU, Layers: []Layer{
		{Name: "a", Out: 2, In: 2, W: []float32{1, -1, 2, 0.5}, B: []float32{0, -1}},
		{Name: "b", Out: 2, In: 2, W: []float32{1, 1, -1, 2}, B: []float32{0.5, 0}},
	}}
	var ws Workspace
	got := n.Forward(&ws, []float32{1, 2, 0, 0}, 2)
	// second sample x=[0,0]: z1=[0,-1] -> [0,0]; z2=[0.5,0]
	want := []float32{2.5, 4, 0.5, 0}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logits %v, want %v", got, want)
		}
	}
	// loss for labels [1, 0]: sample 1: lse(2.5,4) - 4; sample 2: lse(0.5,0) - 0.5
	loss, err := n.LossAndGradients(&ws, []float32{1, 2, 0, 0}, []int{1, 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lse := func(a, b float64) float64 { return math.Log(math.Exp(a) + math.Exp(b)) }
	wantLoss := ((lse(2.5, 4) - 4) + (lse(0.5, 0) - 0.5)) / 2
	if math.Abs(loss-wantLoss) > 1e-6 {
		t.Errorf("loss %v, want %v", loss, wantLoss)
	}
}

func randomNet(r *rand.Rand, act Activation, sizes ...int) *Network {
	n := &Network{Act: act}
	for i := 1; i < len(sizes); i++ {
		l := Layer{Name: "layers." + string(rune('a'+i)), Out: sizes[i], In: sizes[i-1],
			W: make([]float32, sizes[i]*sizes[i-1]), B: make([]float32, sizes[i])}
		for j := range l.W {
			l.W[j] = float32(r.NormFloat64() / math.Sqrt(float64(sizes[i-1])))
		}
		for j := range l.B {
			l.B[j] = float32(0.1 * r.NormFloat64())
		}
		n.Layers = append(n.Layers, l)
	}
	return n
}

func randomData(r *rand.Rand, rows, cols, classes int) ([]float32, []int) {
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	y := make([]int, rows)
	for i := range y {
		y[i] = r.IntN(classes)
	}
	return x, y
}

func TestGradientsMatchFiniteDifferences(t *testing.T) {
	for _, act := range []Activation{ReLU, GELU, SiLU, Tanh} {
		t.Run(act.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(act), 7))
			n := randomNet(r, act, 5, 7, 6, 4)
			x, y := randomData(r, 9, 5, 4)
			var ws Workspace
			g := NewGradients(n)
			if _, err := n.LossAndGradients(&ws, x, y, g); err != nil {
				t.Fatal(err)
			}
			h := float32(1e-2)
			if act == ReLU {
				h = 1e-3 // stay clear of the kinks
			}
			check := func(what string, p *float32, analytic float32) {
				orig := *p
				*p = orig + h
				lp, _ := n.LossAndGradients(&ws, x, y, nil)
				*p = orig - h
				lm, _ := n.LossAndGradients(&ws, x, y, nil)
				*p = orig
				fd := (lp - lm) / float64(2*h)
				if math.Abs(fd-float64(analytic)) > 2e-3+2e-2*math.Abs(fd) {
					t.Errorf("%s: backprop %g, finite difference %g", what, analytic, fd)
				}
			}
			for l := range n.Layers {
				for i := range n.Layers[l].W {
					check("W", &n.Layers[l].W[i], g.W[l][i])
				}
				for i := range n.Layers[l].B {
					check("b", &n.Layers[l].B[i], g.B[l][i])
				}
			}
		})
	}
}

func TestChain(t *testing.T) {
	s := func(d ...int64) []int64 { return d }
	tests := []struct {
		name   string
		shapes map[string][]int64
		order  []string
		want   string
		err    string
	}{
		{"natural order", map[string][]int64{"fc1.weight": s(8, 4), "fc1.bias": s(8), "fc2.weight": s(8, 8), "fc10.weight": s(3, 8)}, nil, "fc1,fc2,fc10", ""},
		{"shape order differs from names", map[string][]int64{"b.weight": s(8, 4), "a.weight": s(3, 8)}, nil, "b,a", ""},
		{"explicit order", map[string][]int64{"x.weight": s(4, 4), "y.weight": s(4, 4)}, []string{"y", "x"}, "y,x", ""},
		{"ambiguous", map[string][]int64{"p.weight": s(4, 4), "q.weight": s(4, 4), "r.weight": s(4, 2)}, nil, "", "several orders"},
		{"no chain", map[string][]int64{"a.weight": s(4, 3), "b.weight": s(5, 6)}, nil, "", "do not form a chain"},
		{"conv kernel", map[string][]int64{"conv.weight": s(4, 3, 3, 3)}, nil, "", "not a Linear weight"},
		{"norm", map[string][]int64{"fc1.weight": s(4, 3), "norm.scale": s(4)}, nil, "", "not a Linear weight"},
		{"bad bias", map[string][]int64{"fc1.weight": s(4, 3), "fc1.bias": s(5)}, nil, "", "rows"},
		{"order does not chain", map[string][]int64{"a.weight": s(4, 3), "b.weight": s(2, 4)}, []string{"b", "a"}, "", "does not chain"},
		{"order misses a layer", map[string][]int64{"a.weight": s(4, 3), "b.weight": s(2, 4)}, []string{"a"}, "", "distinct"},
	}
	for _, tc := range tests {
		got, err := Chain(tc.shapes, tc.order)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("%s: %v, %v; want %s", tc.name, got, err, tc.want)
		}
	}
}

// writeInputs writes x [rows, cols] and y [rows] into one file.
func writeInputs(t *testing.T, path string, x []float32, rows, cols int, y []int) {
	t.Helper()
	xt, _ := tensors.FromFloat32("x", tensors.F32, []int64{int64(rows), int64(cols)}, x)
	ts := []*tensors.Tensor{xt}
	if y != nil {
		yt, _ := tensors.New("y", tensors.I64, []int64{int64(len(y))})
		for i, v := range y {
			for b := range 8 {
				yt.Data[8*i+b] = byte(uint64(v) >> (8 * b))
			}
		}
		ts = append(ts, yt)
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, buf.Bytes(), 0o644)
}

func TestCollectStatsAgainstFormula(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	a := randomNet(r, GELU, 6, 5, 4, 3)
	b := randomNet(r, GELU, 6, 5, 4, 3)
	rows := 23
	x, _ := randomData(r, rows, 6, 3)
	dir := t.TempDir()
	path := filepath.Join(dir, "calib.safetensors")
	writeInputs(t, path, x, rows, 6, nil)
	in, err := OpenInputs(path, "")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	s, err := CollectStats(context.Background(), []*Network{a, b}, in, Options{BatchSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	// reference: the whole set in one batch, sums in float64
	var wa, wb Workspace
	a.Forward(&wa, x, rows)
	b.Forward(&wb, x, rows)
	for l, name := range a.Modules() {
		m := s.Module(name)
		d := a.Layers[l].In
		xa, xb := wa.Inputs[l], wb.Inputs[l]
		if m.Count != int64(rows) || m.Dim != d {
			t.Fatalf("%s: count %d dim %d", name, m.Count, m.Dim)
		}
		for i := range d {
			var sa, abs float64
			for k := range rows {
				sa += float64(xa[k*d+i])
				abs += math.Abs(float64(xa[k*d+i]))
			}
			near(t, name+".sum_a", m.Sum[i], sa)
			near(t, name+".abs_sum_a", m.Abs[i], abs)
			for j := range d {
				var gaa, gbb, gab float64
				for k := range rows {
					gaa += float64(xa[k*d+i]) * float64(xa[k*d+j])
					gbb += float64(xb[k*d+i]) * float64(xb[k*d+j])
					gab += float64(xa[k*d+i]) * float64(xb[k*d+j])
				}
				near(t, name+".gram_a", m.Gram[i*d+j], gaa)
				near(t, name+".gram_b", m.GramB[i*d+j], gbb)
				near(t, name+".cross", m.Cross[i*d+j], gab)
			}
		}
	}
	// round trip through the file format
	out := filepath.Join(dir, "joint.safetensors")
	if err := stats.Write(context.Background(), out, s, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := stats.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Kind != stats.Joint || f.Samples != int64(rows) || strings.Join(f.Modules(), ",") != strings.Join(a.Modules(), ",") {
		t.Fatalf("file: kind %s samples %d modules %v", f.Kind, f.Samples, f.Modules())
	}
	back, _ := f.Load()
	for i, m := range back.Modules {
		if m.Count != s.Modules[i].Count || m.Cross[3] != s.Modules[i].Cross[3] {
			t.Errorf("%s differs after the round trip", m.Name)
		}
	}
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-5*(1+math.Abs(want)) {
		t.Errorf("%s: %g, want %g", what, got, want)
	}
}

func TestCollectFisherAgainstPerBatchGradients(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	n := randomNet(r, Tanh, 4, 6, 3)
	rows := 10
	x, y := randomData(r, rows, 4, 3)
	path := filepath.Join(t.TempDir(), "c.safetensors")
	writeInputs(t, path, x, rows, 4, y)
	in, _ := OpenInputs(path, "x")
	defer in.Close()
	labels, err := ReadLabels(path, "")
	if err != nil {
		t.Fatal(err)
	}
	fs, meta, err := CollectFisher(context.Background(), n, in, labels, Options{BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Batches != 3 || meta.BatchSize != 4 || meta.Samples != 10 {
		t.Errorf("meta %+v", meta)
	}
	// independent: finite-difference gradient of each batch's mean loss,
	// squared, averaged over the 3 batches (sizes 4, 4, 2)
	var ws Workspace
	fd := func(p *float32, lo, hi int) float64 {
		orig := *p
		const h = 1e-2
		*p = orig + h
		lp, _ := n.LossAndGradients(&ws, x[lo*4:hi*4], y[lo:hi], nil)
		*p = orig - h
		lm, _ := n.LossAndGradients(&ws, x[lo*4:hi*4], y[lo:hi], nil)
		*p = orig
		return (lp - lm) / (2 * h)
	}
	w0, _ := fs[0].Float32() // layers.b.weight
	for i := range n.Layers[0].W {
		var want float64
		for _, b := range [][2]int{{0, 4}, {4, 8}, {8, 10}} {
			g := fd(&n.Layers[0].W[i], b[0], b[1])
			want += g * g / 3
		}
		if math.Abs(float64(w0[i])-want) > 1e-4+3e-2*want {
			t.Errorf("Fisher[%d] = %g, finite differences give %g", i, w0[i], want)
		}
	}
	if fs[0].Name != "layers.b.weight" || fs[1].Name != "layers.b.bias" {
		t.Errorf("names %s %s", fs[0].Name, fs[1].Name)
	}
}

func TestBadInputs(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	n := randomNet(r, ReLU, 4, 5, 3)
	dir := t.TempDir()
	ctx := context.Background()

	wrong := filepath.Join(dir, "wrong.safetensors")
	x, y := randomData(r, 6, 7, 3)
	writeInputs(t, wrong, x, 6, 7, y)
	in, _ := OpenInputs(wrong, "")
	if _, err := CollectStats(ctx, []*Network{n}, in, Options{}); err == nil || !strings.Contains(err.Error(), "7 features") {
		t.Errorf("feature mismatch: %v", err)
	}
	in.Close()

	bad := filepath.Join(dir, "labels.safetensors")
	x, y = randomData(r, 6, 4, 3)
	y[2] = 3
	writeInputs(t, bad, x, 6, 4, y)
	in, _ = OpenInputs(bad, "")
	labels, _ := ReadLabels(bad, "")
	if _, _, err := CollectFisher(ctx, n, in, labels, Options{BatchSize: 4}); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("label out of range: %v", err)
	}
	in.Close()

	nan := filepath.Join(dir, "nan.safetensors")
	x, y = randomData(r, 6, 4, 3)
	x[9] = float32(math.NaN())
	writeInputs(t, nan, x, 6, 4, y)
	in, _ = OpenInputs(nan, "")
	if _, err := CollectStats(ctx, []*Network{n}, in, Options{}); err == nil || !strings.Contains(err.Error(), "sample 2, feature 1") {
		t.Errorf("NaN input: %v", err)
	}
	in.Close()

	// a Fisher file of another model
	fpath := filepath.Join(dir, "fisher.safetensors")
	ft, _ := tensors.FromFloat32("fc1.weight", tensors.F32, []int64{2, 2}, []float32{1, 2, 3, 4})
	if err := fisher.Write(ctx, fpath, []*tensors.Tensor{ft}, fisher.Meta{Batches: 1}, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	mpath := filepath.Join(dir, "model.safetensors")
	mt, _ := tensors.FromFloat32("fc1.weight", tensors.F32, []int64{2, 3}, make([]float32, 6))
	var buf bytes.Buffer
	safetensors.Encode(&buf, []*tensors.Tensor{mt}, nil)
	os.WriteFile(mpath, buf.Bytes(), 0o644)
	ff, err := fisher.Open(fpath)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	model, _ := checkpoint.Open(mpath)
	defer model.Close()
	if err := ff.CheckAgainst(model); err == nil || !strings.Contains(err.Error(), `"fc1.weight"`) {
		t.Errorf("Fisher of another model: %v", err)
	}

	// a statistics file of another version, and a file that is not one
	if _, err := stats.Open(mpath); err == nil || !strings.Contains(err.Error(), "not a wtool statistics file") {
		t.Errorf("not a stats file: %v", err)
	}
	other := filepath.Join(dir, "v9.safetensors")
	ct := &tensors.Tensor{Name: "fc1.count", DType: tensors.I64, Shape: []int64{}, Data: make([]byte, 8)}
	buf.Reset()
	safetensors.Encode(&buf, []*tensors.Tensor{ct}, map[string]string{"format": "wtool-stats", "version": "9", "kind": "single"})
	os.WriteFile(other, buf.Bytes(), 0o644)
	if _, err := stats.Open(other); err == nil || !strings.Contains(err.Error(), `version "9"`) {
		t.Errorf("stats version: %v", err)
	}
}

func TestEvaluateDemo(t *testing.T) {
	demo := "../../testdata/demo"
	m, err := checkpoint.Open(demo + "/mlp-a")
	if err != nil {
		t.Skip(err)
	}
	defer m.Close()
	n, err := Load(m, nil, ReLU)
	if err != nil {
		t.Fatal(err)
	}
	in, err := OpenInputs(demo+"/digits_test.safetensors", "")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	labels, err := ReadLabels(demo+"/digits_test.safetensors", "")
	if err != nil {
		t.Fatal(err)
	}
	acc, loss, err := Evaluate(context.Background(), n, in, labels, 128)
	if err != nil {
		t.Fatal(err)
	}
	// train_demo.py printed "mlp-a: test accuracy 0.9648" (PyTorch)
	if math.Abs(acc-0.9648) > 0.001 || loss <= 0 || loss > 1 {
		t.Errorf("accuracy %.4f loss %.4f; PyTorch measured 0.9648", acc, loss)
	}
}
