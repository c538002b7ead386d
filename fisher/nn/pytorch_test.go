package nn

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

const reference = "testdata/reference.py"

// the families the engine runs, with testdata/families' tiny models
var testFamilies = []string{"resnet18", "resnet50", "vit", "llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "bert", "mixtral"}

var (
	refOnce sync.Once
	refDir  string
	refErr  error
	refOut  []byte
)

// references writes, once per test binary, every family's checkpoints
// (seeds 1 and 2), data, PyTorch logits, BatchNorm recomputation and
// collector statistics (testdata/reference.py all).
func references(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	refOnce.Do(func() {
		refDir, refErr = mkdirTemp()
		if refErr != nil {
			return
		}
		args := append([]string{reference, "all", refDir}, testFamilies...)
		if names := trainedPairs(); len(names) > 0 {
			args = append(append(args, "--pairs", pairsDir), names...)
		}
		cmd := exec.Command(py, args...)
		refOut, refErr = cmd.CombinedOutput()
	})
	if refErr != nil {
		t.Fatalf("reference.py all: %v\n%s", refErr, refOut)
	}
	return refDir
}

func readF64(t *testing.T, path, name string) ([]float64, []int64) {
	t.Helper()
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tt, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tt.Float64()
	if err != nil {
		t.Fatal(err)
	}
	return v, tt.Shape
}

func loadNet(t *testing.T, path string) *Net {
	t.Helper()
	n, err := LoadPath(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func openTestData(t *testing.T, path string) *Data {
	t.Helper()
	d, err := OpenData(path, "", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// relErr is max |got - want| / max |want|.
func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i, w := range want {
		num = math.Max(num, math.Abs(float64(got[i])-w))
		den = math.Max(den, math.Abs(w))
	}
	return num / den
}

// TestFamiliesMatchPyTorch: on testdata/families' tiny models of every
// family the engine runs, (1) the logits equal PyTorch's forward pass in
// float64 to 1e-5 of the largest logit; (2) BatchNorm running statistics
// recomputed in training mode equal PyTorch's (momentum=None and 0.1,
// float64) to 1e-5; (3) single and joint statistics with the default activation points
// equal tools/wtool_collect.py's (same entries, same order, values to 1e-5
// of their scale).
func TestFamiliesMatchPyTorch(t *testing.T) {
	dir := references(t)
	for _, fam := range testFamilies {
		t.Run(fam, func(t *testing.T) {
			md := filepath.Join(dir, fam)
			n := loadNet(t, md)
			d := openTestData(t, filepath.Join(md, "data.safetensors"))
			t.Run("logits", func(t *testing.T) {
				got, rows, cols, err := Forward(context.Background(), n, d, 0, d.N)
				if err != nil {
					t.Fatal(err)
				}
				want, shape := readF64(t, filepath.Join(md, "logits.safetensors"), "logits")
				if int64(rows) != shape[0] || int64(cols) != shape[1] {
					t.Fatalf("logits %dx%d, PyTorch %v", rows, cols, shape)
				}
				if e := relErr(got, want); e > 1e-5 {
					t.Errorf("relative error %.3g", e)
				} else {
					t.Logf("relative error %.3g", e)
				}
			})
			if n.Arch.Family == "resnet" {
				t.Run("batchnorm", func(t *testing.T) {
					bd := openTestData(t, filepath.Join(md, "bn-data.safetensors"))
					compareBN(t, loadNet(t, md), bd, filepath.Join(md, "bn.safetensors"), BNOptions{BatchSize: 8, Batches: 2})
					compareBN(t, loadNet(t, md), bd, filepath.Join(md, "bn-momentum.safetensors"), BNOptions{BatchSize: 8, Batches: 2, Momentum: 0.1})
				})
			}
			t.Run("single stats", func(t *testing.T) {
				s, err := CollectStats(context.Background(), []*Net{n}, d, StatsOptions{BatchSize: 5})
				if err != nil {
					t.Fatal(err)
				}
				compareStats(t, s, filepath.Join(md, "single.safetensors"))
			})
			t.Run("joint stats", func(t *testing.T) {
				s, err := CollectStats(context.Background(), []*Net{n, loadNet(t, md+"-b")}, d, StatsOptions{BatchSize: 4})
				if err != nil {
					t.Fatal(err)
				}
				compareStats(t, s, filepath.Join(md, "joint.safetensors"))
			})
		})
	}
}

// compareBN recomputes the BatchNorm statistics and compares them with
// PyTorch's (a file of running_mean, running_var, num_batches_tracked).
func compareBN(t *testing.T, n *Net, d *Data, ref string, opts BNOptions) {
	t.Helper()
	got, err := RecomputeBatchNorm(context.Background(), n, d, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := checkpoint.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(got) != len(m.Names()) {
		t.Errorf("%d tensors, PyTorch %d", len(got), len(m.Names()))
	}
	var worst float64
	for _, g := range got {
		w, err := m.Tensor(g.Name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(g.Name, "num_batches_tracked") {
			if string(g.Data) != string(w.Data) {
				t.Errorf("%s: %v, PyTorch %v", g.Name, g.Data, w.Data)
			}
			continue
		}
		gv, _ := g.Float32()
		wv, _ := w.Float64()
		if g.DType != tensors.F32 && g.DType != tensors.F64 {
			// a half-precision checkpoint: PyTorch's value rounded to its
			// dtype, give or take one unit in the last place
			for i, x := range wv {
				r, _ := tensors.FromFloat64("", g.DType, []int64{}, []float64{x})
				rv, _ := r.Float64()
				up, _ := tensors.FromFloat64("", g.DType, []int64{}, []float64{rv[0] * (1 + 1.0/128)})
				uv, _ := up.Float64()
				if math.Abs(float64(gv[i])-rv[0]) > math.Abs(uv[0]-rv[0])*1.01 {
					t.Errorf("%s[%d]: %g, PyTorch %g (%s %g)", g.Name, i, gv[i], x, g.DType, rv[0])
					break
				}
				wv[i] = rv[0]
			}
		}
		if e := relErr(gv, wv); e > 1e-5 && (g.DType == tensors.F32 || g.DType == tensors.F64) {
			t.Errorf("%s: relative error %.3g", g.Name, e)
		}
		worst = math.Max(worst, relErr(gv, wv))
	}
	t.Logf("%d tensors, worst relative error %.3g", len(got), worst)
}

// compareStats compares statistics with a collector file: the same entries
// in the same order with the same counts, and every field to 1e-5 of its
// largest value (sums: of the largest abs_sum; Gram matrices: of the
// largest diagonal entry, sqrt(max G_ii max G'_jj) for the cross Gram).
// Elementwise comparison is too strict for float32 forward passes: a
// channel that ReLU almost always zeroes has a tiny sum whose few nonzero
// terms are differences of larger numbers.
func compareStats(t *testing.T, got *stats.Stats, ref string) {
	t.Helper()
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
		var gn, wn []string
		for _, m := range got.Modules {
			gn = append(gn, m.Name)
		}
		for _, m := range want.Modules {
			wn = append(wn, m.Name)
		}
		t.Fatalf("kind %s/%s samples %d/%d entries\n%v\n%v", got.Kind, want.Kind, got.Samples, want.Samples, gn, wn)
	}
	var worst float64
	for i, w := range want.Modules {
		g := got.Modules[i]
		if g.Name != w.Name || g.Dim != w.Dim || g.Count != w.Count {
			t.Fatalf("entry %d: %s/%d/%d vs collector %s/%d/%d", i, g.Name, g.Dim, g.Count, w.Name, w.Dim, w.Count)
		}
		d := w.Dim
		diag := func(g []float64) float64 {
			var m float64
			for i := range d {
				m = math.Max(m, g[i*d+i])
			}
			return m
		}
		check := func(field string, got, want []float64, scale float64) {
			var e float64
			for i := range want {
				e = math.Max(e, math.Abs(got[i]-want[i]))
			}
			e /= scale + 1e-300
			worst = math.Max(worst, e)
			if e > 1e-5 {
				t.Errorf("%s.%s: error %.3g of its scale", w.Name, field, e)
			}
		}
		check("sum", g.Sum, w.Sum, maxAbs(w.Abs))
		check("abs_sum", g.Abs, w.Abs, maxAbs(w.Abs))
		check("gram", g.Gram, w.Gram, diag(w.Gram))
		if got.Kind == stats.Joint {
			check("sum_b", g.SumB, w.SumB, maxAbs(w.AbsB))
			check("abs_sum_b", g.AbsB, w.AbsB, maxAbs(w.AbsB))
			check("gram_b", g.GramB, w.GramB, diag(w.GramB))
			check("cross", g.Cross, w.Cross, math.Sqrt(diag(w.Gram)*diag(w.GramB)))
		}
	}
	t.Logf("%d entries, worst error %.3g of scale", len(want.Modules), worst)
}

func maxAbs(v []float64) float64 {
	var m float64
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

func mkdirTemp() (string, error) { return os.MkdirTemp("", "wtool-nn-") }

// the trained pairs of testdata/pairs
var pairNames = []string{"resnet", "vit", "llama"}

const pairsDir = "../../testdata/pairs"

// TestTrainedPairsMatchPyTorch: on testdata/pairs' trained models (float16
// and bfloat16 weights), logits equal families.py's forward pass in
// float64 to 1e-5, ResNet BatchNorm recomputation equals PyTorch's, joint
// statistics equal the collector's.
func TestTrainedPairsMatchPyTorch(t *testing.T) {
	names := trainedPairs()
	if len(names) == 0 {
		t.Skip("no trained pairs")
	}
	dir := filepath.Join(references(t), "pairs")
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			d := filepath.Join(dir, name)
			test := openTestData(t, filepath.Join(d, "test.safetensors"))
			train := openTestData(t, filepath.Join(d, "train.safetensors"))
			a := loadNet(t, filepath.Join(pairsDir, name+"-a"))
			b := loadNet(t, filepath.Join(pairsDir, name+"-b"))
			for tag, n := range map[string]*Net{"a": a, "b": b} {
				got, _, _, err := Forward(context.Background(), n, test, 0, test.N)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := readF64(t, filepath.Join(d, "logits-"+tag+".safetensors"), "logits")
				if e := relErr(got, want); e > 1e-5 {
					t.Errorf("%s-%s logits: relative error %.3g", name, tag, e)
				} else {
					t.Logf("%s-%s logits: relative error %.3g", name, tag, e)
				}
			}
			bs := 16
			if name == "llama" {
				bs = 4
			}
			s, err := CollectStats(context.Background(), []*Net{a, b}, train, StatsOptions{BatchSize: bs})
			if err != nil {
				t.Fatal(err)
			}
			compareStats(t, s, filepath.Join(d, "joint.safetensors"))
			if name == "resnet" {
				compareBN(t, loadNet(t, filepath.Join(pairsDir, name+"-a")), train, filepath.Join(d, "bn.safetensors"), BNOptions{BatchSize: 32, Batches: 2})
			}
		})
	}
}

// trainedPairs lists the pairs of testdata/pairs that exist.
func trainedPairs() []string {
	var names []string
	for _, n := range pairNames {
		if _, err := os.Stat(filepath.Join(pairsDir, n+"-b", "model.safetensors")); err == nil {
			names = append(names, n)
		}
	}
	return names
}
