package mlp

import (
	"context"
	"math"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
)

// python returns the interpreter with torch, or skips the test (fails it
// when WTOOL_REQUIRE_PYTHON is set, as in CI).

const (
	demoDir   = "../../testdata/demo"
	collector = "../../tools/wtool_collect.py"
)

func runCollector(t *testing.T, py string, args ...string) {
	t.Helper()
	cmd := exec.Command(py, append([]string{collector}, append(args, "-q")...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("wtool_collect.py %v: %v\n%s", args, err, out)
	}
}

func loadNet(t *testing.T, path string, act Activation) *Network {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n, err := Load(m, nil, act)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStatsMatchPyTorchCollector: the statistics the Go engine computes equal
// those tools/wtool_collect.py computes with PyTorch (float64 accumulation)
// for the same models and data. Entries are compared at 1e-5 relative to
// their natural scale: abs_sum for a sum, sqrt(G_ii G_jj) for a Gram entry
// (the Cauchy-Schwarz bound), since a float32 product of a batch is exact
// only to that scale.
func TestStatsMatchPyTorchCollector(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	calib := demoDir + "/digits_train.safetensors"
	for _, tc := range []struct {
		name   string
		models []string
		act    Activation
	}{
		{"single relu", []string{"mlp-a"}, ReLU},
		{"joint relu", []string{"mlp-a", "mlp-b"}, ReLU},
		{"joint gelu", []string{"mlp-c", "mlp-d"}, GELU},
		{"single silu", []string{"mlp-b"}, SiLU},
		{"single tanh", []string{"mlp-c"}, Tanh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nets []*Network
			args := []string{"stats"}
			for _, m := range tc.models {
				nets = append(nets, loadNet(t, filepath.Join(demoDir, m), tc.act))
				args = append(args, filepath.Join(demoDir, m))
			}
			ref := filepath.Join(dir, tc.name+".py.safetensors")
			runCollector(t, py, append(args, "--calib", calib, "--act", tc.act.String(), "-o", ref, "--batch-size", "100")...)
			in, err := OpenInputs(calib, "")
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close()
			got, err := CollectStats(context.Background(), nets, in, Options{BatchSize: 256})
			if err != nil {
				t.Fatal(err)
			}
			f, err := stats.Open(ref)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want, err := f.Load()
			if err != nil {
				t.Fatal(err)
			}
			if want.Kind != got.Kind || want.Samples != got.Samples || len(want.Modules) != len(got.Modules) {
				t.Fatalf("kind %s/%s samples %d/%d modules %d/%d", got.Kind, want.Kind, got.Samples, want.Samples, len(got.Modules), len(want.Modules))
			}
			for i, w := range want.Modules {
				g := got.Modules[i]
				if g.Name != w.Name || g.Dim != w.Dim || g.Count != w.Count {
					t.Fatalf("module %d: %s/%d/%d vs %s/%d/%d", i, g.Name, g.Dim, g.Count, w.Name, w.Dim, w.Count)
				}
				compareVec(t, w.Name+".sum", g.Sum, w.Sum, w.Abs)
				compareVec(t, w.Name+".abs_sum", g.Abs, w.Abs, w.Abs)
				compareGram(t, w.Name+".gram", g.Gram, w.Gram, w.Gram, w.Gram, w.Dim)
				if got.Kind == stats.Joint {
					compareVec(t, w.Name+".sum_b", g.SumB, w.SumB, w.AbsB)
					compareVec(t, w.Name+".abs_sum_b", g.AbsB, w.AbsB, w.AbsB)
					compareGram(t, w.Name+".gram_b", g.GramB, w.GramB, w.GramB, w.GramB, w.Dim)
					compareGram(t, w.Name+".cross", g.Cross, w.Cross, w.Gram, w.GramB, w.Dim)
				}
			}
		})
	}
}

func compareVec(t *testing.T, what string, got, want, scale []float64) {
	t.Helper()
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-5*(scale[i]+1e-12) {
			t.Errorf("%s[%d]: Go %.10g, PyTorch %.10g", what, i, got[i], want[i])
			return
		}
	}
}

func compareGram(t *testing.T, what string, got, want, ga, gb []float64, d int) {
	t.Helper()
	for i := range d {
		for j := range d {
			scale := math.Sqrt(ga[i*d+i]*gb[j*d+j]) + 1e-12
			if math.Abs(got[i*d+j]-want[i*d+j]) > 1e-5*scale {
				t.Errorf("%s[%d,%d]: Go %.10g, PyTorch %.10g (scale %.3g)", what, i, j, got[i*d+j], want[i*d+j], scale)
				return
			}
		}
	}
}

// TestFisherMatchesPyTorchCollector: the Fisher the Go engine computes equals
// the PyTorch collector's within 1e-5 of each tensor's largest value.
func TestFisherMatchesPyTorchCollector(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	data := demoDir + "/digits_train.safetensors"
	for _, tc := range []struct {
		model string
		act   Activation
		batch string
	}{
		{"mlp-a", ReLU, "32"}, {"mlp-c", GELU, "64"}, {"mlp-b", SiLU, "100"}, {"mlp-d", Tanh, "32"},
	} {
		t.Run(tc.model+"-"+tc.act.String(), func(t *testing.T) {
			ref := filepath.Join(dir, tc.model+tc.act.String()+".safetensors")
			runCollector(t, py, "fisher", filepath.Join(demoDir, tc.model), "--calib", data, "--labels", data,
				"--act", tc.act.String(), "--batch-size", tc.batch, "-o", ref)
			n := loadNet(t, filepath.Join(demoDir, tc.model), tc.act)
			in, _ := OpenInputs(data, "")
			defer in.Close()
			labels, _ := ReadLabels(data, "")
			bs := map[string]int{"32": 32, "64": 64, "100": 100}[tc.batch]
			ts, meta, err := CollectFisher(context.Background(), n, in, labels, Options{BatchSize: bs})
			if err != nil {
				t.Fatal(err)
			}
			f, err := fisher.Open(ref)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Meta.Batches != meta.Batches || f.Meta.BatchSize != meta.BatchSize || f.Meta.Samples != meta.Samples {
				t.Errorf("meta: Go %+v, PyTorch %+v", meta, f.Meta)
			}
			if math.Abs(f.Meta.Loss-meta.Loss) > 1e-5*math.Abs(f.Meta.Loss)+1e-9 {
				t.Errorf("loss: Go %g, PyTorch %g", meta.Loss, f.Meta.Loss)
			}
			if len(f.Names()) != len(ts) {
				t.Fatalf("%d tensors, PyTorch %d", len(ts), len(f.Names()))
			}
			for _, x := range ts {
				want, err := f.Get(x.Name)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := x.Float32()
				var maxRef, maxDiff float64
				for i := range want {
					maxRef = max(maxRef, float64(want[i]))
					maxDiff = max(maxDiff, math.Abs(float64(got[i])-float64(want[i])))
				}
				if maxDiff > 1e-5*maxRef {
					t.Errorf("%s: max difference %.3g, largest value %.3g (relative %.2g)", x.Name, maxDiff, maxRef, maxDiff/maxRef)
				}
			}
		})
	}
}
