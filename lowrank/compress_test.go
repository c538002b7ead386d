package lowrank

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

const demo = "../testdata/demo"

func open(t *testing.T, p string) *checkpoint.Model {
	t.Helper()
	m, err := checkpoint.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func floats(t *testing.T, m *checkpoint.Model, name string) []float32 {
	t.Helper()
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// matmul returns b (m x k) times a (k x n).
func matmul(b, a []float32, m, k, n int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for r := range k {
			for j := range n {
				out[i*n+j] += float64(b[i*k+r]) * float64(a[r*n+j])
			}
		}
	}
	return out
}

func TestCompressFactoredEqualsDense(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	base := CompressOptions{Method: "svd", Rule: RankRule{Rank: 12}, SVD: SVDOptions{Exact: true},
		Targets: []*regexp.Regexp{regexp.MustCompile(`fc[1-4]\.weight$`)}}
	fo, do := base, base
	do.Format = "dense"
	fout, dout := filepath.Join(dir, "factored"), filepath.Join(dir, "dense")
	reports, _, err := Compress(context.Background(), m, fout, fo, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Compress(context.Background(), m, dout, do, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 4 {
		t.Fatalf("%d reports", len(reports))
	}
	f, d := open(t, fout), open(t, dout)
	for _, mod := range []string{"fc1", "fc2", "fc3", "fc4"} {
		a := floats(t, f, mod+".0.weight")
		b := floats(t, f, mod+".1.weight")
		prod := matmul(b, a, 64, 12, 64)
		dense := floats(t, d, mod+".weight")
		for i := range dense {
			if math.Abs(prod[i]-float64(dense[i])) > 1e-5*(1+math.Abs(float64(dense[i]))) {
				t.Fatalf("%s: M.1.weight @ M.0.weight differs from the dense output at %d", mod, i)
			}
		}
		if f.Has(mod+".weight") || !f.Has(mod+".1.bias") || f.Has(mod+".bias") {
			t.Errorf("%s: factored names %v", mod, f.Names())
		}
	}
	// untouched tensors pass through
	if string(mustBytes(t, f, "fc5.weight")) != string(mustBytes(t, m, "fc5.weight")) {
		t.Error("fc5.weight changed")
	}
	var cj struct {
		Modules map[string]struct{ Rank int }
	}
	b, err := os.ReadFile(filepath.Join(fout, "compression.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &cj)
	if cj.Modules["fc2"].Rank != 12 {
		t.Errorf("compression.json: %s", b)
	}
	if f.Metadata()["wtool_compression"] != "svd" {
		t.Errorf("metadata %v", f.Metadata())
	}
	// reports: the error equals the Eckart-Young tail of the spectrum
	for _, r := range reports {
		w := floats(t, m, r.Name)
		s, _ := SingularValues(w, 64, 64)
		var tail, all float64
		for i, v := range s {
			all += v * v
			if i >= 12 {
				tail += v * v
			}
		}
		if math.Abs(r.RelError-math.Sqrt(tail/all)) > 1e-4 || r.Kept != 12*128 || r.Params != 64*64 {
			t.Errorf("%s: report %+v, expected error %g", r.Name, r, math.Sqrt(tail/all))
		}
	}
}

func mustBytes(t *testing.T, m *checkpoint.Model, name string) []byte {
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return x.Data
}

func TestCompressEnergyAndConv(t *testing.T) {
	p := "../../shared/fixtures/real/burn_mnist.safetensors"
	if _, err := os.Stat(p); err != nil {
		t.Skip(err)
	}
	m := open(t, p)
	out := filepath.Join(t.TempDir(), "mnist")
	reports, _, err := Compress(context.Background(), m, out, CompressOptions{Method: "svd", Rule: RankRule{Energy: 0.9}}, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := open(t, out)
	for _, r := range reports {
		mod := strings.TrimSuffix(r.Name, ".weight")
		if r.LeftDense {
			if !f.Has(r.Name) || f.Has(mod+".0.weight") {
				t.Errorf("%s left dense but names %v", r.Name, f.Names())
			}
			continue
		}
		a, _ := f.Info(mod + ".0.weight")
		b, _ := f.Info(mod + ".1.weight")
		if a.Shape[0] != int64(r.Rank) || b.Shape[1] != int64(r.Rank) || len(a.Shape) != len(r.Shape) {
			t.Errorf("%s: factor shapes %v %v for rank %d", r.Name, a.Shape, b.Shape, r.Rank)
		}
		if r.Energy < 0.9-1e-9 {
			t.Errorf("%s keeps %.3f of the energy", r.Name, r.Energy)
		}
		if len(r.Shape) == 4 { // conv: [r, in, kh, kw] and [out, r, 1, 1]
			if a.Shape[1] != r.Shape[1] || a.Shape[2] != r.Shape[2] || b.Shape[2] != 1 || b.Shape[3] != 1 {
				t.Errorf("%s: conv factor shapes %v %v", r.Name, a.Shape, b.Shape)
			}
		}
	}
	// the trained fc1 (32 x 11616) is among the factored ones
	found := false
	for _, r := range reports {
		if r.Name == "fc1.weight" && !r.LeftDense && r.Rank < 32 {
			found = true
		}
	}
	if !found {
		t.Errorf("fc1 not factored: %+v", reports)
	}
}

func TestCompressMethodsWithData(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	data := demo + "/digits_train.safetensors"
	n, _ := mlp.Load(m, nil, mlp.ReLU)
	in, _ := mlp.OpenInputs(data, "")
	defer in.Close()
	st, err := mlp.CollectStats(context.Background(), []*mlp.Network{n}, in, mlp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	labels, _ := mlp.ReadLabels(data, "")
	fs, meta, _ := mlp.CollectFisher(context.Background(), n, in, labels, mlp.Options{BatchSize: 32})
	fpath := filepath.Join(dir, "f.safetensors")
	fisher.Write(context.Background(), fpath, fs, meta, checkpoint.WriteOptions{})
	ff, _ := fisher.Open(fpath)
	defer ff.Close()
	test := demo + "/digits_test.safetensors"
	tin, _ := mlp.OpenInputs(test, "")
	defer tin.Close()
	tl, _ := mlp.ReadLabels(test, "")
	loss := map[string]float64{}
	for _, method := range Methods {
		o := CompressOptions{Method: method, Rule: RankRule{Rank: 6}, Format: "dense", Fisher: ff, Stats: StatsOf(st), SVD: SVDOptions{Exact: true}}
		out := filepath.Join(dir, method)
		if _, _, err := Compress(context.Background(), m, out, o, checkpoint.WriteOptions{}); err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		c := open(t, out)
		cn, err := mlp.Load(c, nil, mlp.ReLU)
		if err != nil {
			t.Fatal(err)
		}
		_, l, _ := mlp.Evaluate(context.Background(), cn, tin, tl, 512)
		loss[method] = l
	}
	t.Logf("test loss at rank 6: %v", loss)
	// data-aware methods beat plain SVD on the task at this aggressive rank
	for _, method := range []string{"asvd", "whiten"} {
		if loss[method] >= loss["svd"] {
			t.Errorf("%s loss %.3f is not below plain svd's %.3f", method, loss[method], loss["svd"])
		}
	}
}

func TestCompressRefusals(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	other := filepath.Join(dir, "other-fisher.safetensors")
	x, _ := tensors.FromFloat32("fc1.weight", tensors.F32, []int64{2, 2}, []float32{1, 1, 1, 1})
	fisher.Write(context.Background(), other, []*tensors.Tensor{x}, fisher.Meta{Batches: 1}, checkpoint.WriteOptions{})
	of, _ := fisher.Open(other)
	defer of.Close()
	cases := []struct {
		name string
		o    CompressOptions
		want string
	}{
		{"rank too large everywhere", CompressOptions{Method: "svd", Rule: RankRule{Rank: 65}}, "larger than min"},
		{"regex matches nothing", CompressOptions{Method: "svd", Rule: RankRule{Rank: 4}, Targets: []*regexp.Regexp{regexp.MustCompile("attn")}}, `"attn" matches no`},
		{"regex matches only biases", CompressOptions{Method: "svd", Rule: RankRule{Rank: 4}, Targets: []*regexp.Regexp{regexp.MustCompile(`bias$`)}}, "matches no"},
		{"fisher of another model", CompressOptions{Method: "fwsvd", Rule: RankRule{Rank: 4}, Fisher: of}, "another model"},
		{"no stats", CompressOptions{Method: "whiten", Rule: RankRule{Rank: 4}}, "needs input statistics"},
		{"no rule", CompressOptions{Method: "svd"}, "exactly one"},
	}
	for _, tc := range cases {
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
		_, _, err := Compress(context.Background(), m, out, tc.o, checkpoint.WriteOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output written", tc.name)
		}
	}
}

func TestRanksInMetadata(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	for _, rule := range []RankRule{{Rank: 7}, {Energy: 0.6}} {
		out := filepath.Join(dir, fmt.Sprintf("%v.safetensors", rule))
		reports, _, err := Compress(context.Background(), m, out, CompressOptions{Method: "svd", Rule: rule,
			Targets: []*regexp.Regexp{regexp.MustCompile(`fc[1-4]\.weight`)}}, checkpoint.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f := open(t, out)
		var ranks map[string]int
		if err := json.Unmarshal([]byte(f.Metadata()["wtool_ranks"]), &ranks); err != nil {
			t.Fatalf("%v: metadata %v", rule, f.Metadata())
		}
		for _, r := range reports {
			if ranks[strings.TrimSuffix(r.Name, ".weight")] != r.Rank {
				t.Errorf("%v: %s rank %d in the report, %v in the metadata", rule, r.Name, r.Rank, ranks)
			}
		}
	}
}
