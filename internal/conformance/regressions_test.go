package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/lowrank"
	"github.com/wtool/wtool/merge"
	"github.com/wtool/wtool/tensors"
)

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

func raw(t *testing.T, m *checkpoint.Model, name string) []byte {
	t.Helper()
	x, err := m.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return x.Data
}

// TestConv1DNothingDropped (issue item 1): compressing GPT-2 keeps every
// tensor — the Conv1D biases go to M.1.bias with the module's output size —
// and the factors are [r, in] and [out, r] of the module, not of its [in, out]
// weight.
func TestConv1DNothingDropped(t *testing.T) {
	_, dir := generated(t)
	m := open(t, filepath.Join(dir, "gpt2"))
	out := filepath.Join(t.TempDir(), "c")
	compress(t, m, out, lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 8}})
	c := open(t, out)
	for _, n := range m.Names() {
		mod, field, _ := strings.Cut(n, ".c_")
		_ = mod
		if c.Has(n) {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(n, ".weight"), ".bias")
		if !c.Has(base+".0.weight") || !c.Has(base+".1.weight") {
			t.Errorf("%s (%s) dropped", n, field)
		}
		if strings.HasSuffix(n, ".bias") && !c.Has(base+".1.bias") {
			t.Errorf("%s dropped", n)
		}
	}
	for _, c2 := range []struct {
		name string
		a, b []int64
	}{{"h.0.attn.c_attn", []int64{8, 128}, []int64{384, 8}}, {"h.1.mlp.c_proj", []int64{8, 512}, []int64{128, 8}}} {
		a, _ := c.Info(c2.name + ".0.weight")
		b, _ := c.Info(c2.name + ".1.weight")
		bb, _ := c.Info(c2.name + ".1.bias")
		if !slices.Equal(a.Shape, c2.a) || !slices.Equal(b.Shape, c2.b) || bb.Shape[0] != c2.b[0] {
			t.Errorf("%s: factors %v %v bias %v", c2.name, a.Shape, b.Shape, bb.Shape)
		}
	}
}

// TestSequentialChildren (issue item 2): modules whose names end in .0 or
// .1 (nn.Sequential children: ResNet's downsample.0 and downsample.1) are
// compressed in the dense format like any other, and in the factored format
// never confused with factors.
func TestSequentialChildren(t *testing.T) {
	_, dir := generated(t)
	m := open(t, filepath.Join(dir, "resnet18"))
	target := []*regexp.Regexp{regexp.MustCompile(`downsample\.0\.weight$`)}
	dense := filepath.Join(t.TempDir(), "dense")
	rs := compress(t, m, dense, lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 2}, Format: "dense", Targets: target})
	d := open(t, dense)
	if len(rs) != 3 {
		t.Fatalf("%d reports: %+v", len(rs), rs)
	}
	for _, r := range rs {
		if bytes.Equal(raw(t, d, r.Name), raw(t, m, r.Name)) || r.RelError == 0 {
			t.Errorf("%s: not compressed (%+v)", r.Name, r)
		}
	}
	fac := filepath.Join(t.TempDir(), "fac")
	compress(t, m, fac, lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 2}, Targets: target})
	f := open(t, fac)
	for _, n := range []string{"layer2.0.downsample.0.0.weight", "layer2.0.downsample.0.1.weight", "layer2.0.downsample.1.weight", "layer2.0.downsample.1.running_var"} {
		if !f.Has(n) {
			t.Errorf("%s missing", n)
		}
	}
	if !bytes.Equal(raw(t, f, "layer2.0.downsample.1.running_mean"), raw(t, m, "layer2.0.downsample.1.running_mean")) {
		t.Error("the BatchNorm downsample.1 changed")
	}
	var ranks map[string]int
	json.Unmarshal([]byte(f.Metadata()["wtool_ranks"]), &ranks)
	if len(ranks) != 3 || ranks["layer2.0.downsample.0"] != 2 {
		t.Errorf("wtool_ranks %v", ranks)
	}
}

// TestTooSmallAndTies (issue item 3): a matrix too small for the rank is
// left as it is and reported (the run goes on); a tied embedding is reported
// with what the tie means.
func TestTooSmallAndTies(t *testing.T) {
	_, dir := generated(t)
	m := open(t, filepath.Join(dir, "bert"))
	rs := compress(t, m, filepath.Join(t.TempDir(), "b"), lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 8},
		Targets: []*regexp.Regexp{regexp.MustCompile(`seq_relationship|layer\.0\.attention\.self\.query`)}})
	var small, q *lowrank.TensorReport
	for i := range rs {
		switch rs[i].Module {
		case "cls.seq_relationship":
			small = &rs[i]
		case "bert.encoder.layer.0.attention.self.query":
			q = &rs[i]
		}
	}
	if small == nil || !small.LeftDense || !strings.Contains(small.Note, "larger than min(2, 64)") || q == nil || q.LeftDense || q.Rank != 8 {
		t.Errorf("reports %+v", rs)
	}
	// a tied embedding: Qwen2's lm_head is the embedding
	q2 := open(t, filepath.Join(dir, "qwen2"))
	rs = compress(t, q2, filepath.Join(t.TempDir(), "q"), lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 8}, Format: "dense",
		Targets: []*regexp.Regexp{regexp.MustCompile(`embed_tokens`)}})
	if len(rs) != 1 || !strings.Contains(rs[0].Note, "lm_head is tied to it") || rs[0].Kind != "embedding" {
		t.Errorf("reports %+v", rs)
	}
}

// TestRoundOnce (issue item 10): bf16 results are the single correct
// rounding of the float64 values, never f64 -> f32 -> bf16. Dense
// reconstructions: round(B A) from the float32 factors; PiSSA residuals:
// round(W - scaling B A) from the adapter's float32 factors.
func TestRoundOnce(t *testing.T) {
	_, dir := generated(t)
	m := open(t, filepath.Join(dir, "llama")) // bf16
	work := t.TempDir()
	target := []*regexp.Regexp{regexp.MustCompile(`layers\.0\.mlp\.(up|down)_proj`)}
	o := lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 5}, SVD: lowrank.SVDOptions{Exact: true}, Targets: target, DType: tensors.F32}
	compress(t, m, filepath.Join(work, "fac"), o)
	o.DType, o.Format = 0, "dense"
	compress(t, m, filepath.Join(work, "dense"), o)
	f, d := open(t, filepath.Join(work, "fac")), open(t, filepath.Join(work, "dense"))
	ties := 0
	for _, mod := range []string{"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"} {
		a, b := floats(t, f, mod+".0.weight"), floats(t, f, mod+".1.weight")
		info, _ := d.Info(mod + ".weight")
		rows, cols, k := int(info.Shape[0]), int(info.Shape[1]), 5
		got := raw(t, d, mod+".weight")
		for i := range rows {
			for j := range cols {
				var s float64
				for r := range k {
					s += float64(b[i*k+r]) * float64(a[r*cols+j])
				}
				want := tensors.BF16FromFloat64(s)
				if g := uint16(got[2*(i*cols+j)]) | uint16(got[2*(i*cols+j)+1])<<8; g != want {
					t.Fatalf("%s[%d,%d]: bf16 %#04x, the single rounding of %.17g is %#04x", mod, i, j, g, s, want)
				}
				if tensors.BF16FromFloat32(float32(s)) != want {
					ties++ // where rounding twice would have been wrong
				}
			}
		}
	}
	t.Logf("all %d-element products rounded once; %d of them would have come out differently through float32", 2*96*64, ties)
	// PiSSA residuals
	out := filepath.Join(work, "pissa")
	adapters(t, m, out, lowrank.AdapterOptions{Method: "pissa", Rule: lowrank.RankRule{Rank: 5}, Alpha: 10, Targets: target})
	res := open(t, out)
	ad, err := peft.Read(filepath.Join(out, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"} {
		pm := ad.Modules[mod]
		a, _ := pm.A.Float32()
		b, _ := pm.B.Float32()
		k := pm.Rank()
		s := ad.Config.Scaling(mod)
		w := floats(t, m, mod+".weight")
		got := raw(t, res, mod+".weight")
		cols := int(pm.A.Shape[1])
		for i := range int(pm.B.Shape[0]) {
			for j := range cols {
				var lr float64
				for r := range k {
					lr += float64(b[i*k+r]) * float64(a[r*cols+j])
				}
				want := tensors.BF16FromFloat64(float64(w[i*cols+j]) - s*lr)
				if g := uint16(got[2*(i*cols+j)]) | uint16(got[2*(i*cols+j)+1])<<8; g != want {
					t.Fatalf("%s residual [%d,%d]: %#04x, want %#04x", mod, i, j, g, want)
				}
			}
		}
	}
}

// TestMergeRecordsDType (issue item 4): a merge to another dtype updates
// config.json's torch_dtype.
func TestMergeRecordsDType(t *testing.T) {
	_, dir := generated(t)
	out := filepath.Join(t.TempDir(), "m")
	plan := &merge.Plan{Method: "linear", DType: "bf16", Models: []merge.ModelInput{{Path: filepath.Join(dir, "gpt2")}, {Path: filepath.Join(dir, "gpt2-b")}}}
	if _, err := merge.Execute(context.Background(), plan, out, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(out, "config.json"))
	json.Unmarshal(b, &cfg)
	if cfg["torch_dtype"] != "bfloat16" || cfg["n_embd"] != 128.0 {
		t.Errorf("config.json %s", b)
	}
}

// TestRegMeanFewImages (issue item 5): 32 calibration images per model for
// ViT's 129-feature classifier (128 inputs and the bias): the summed Gram
// matrix has rank at most 64, so 65 directions of the input were never seen.
// Unscaled RegMean (alpha 1) used to zero the merged classifier there; it now
// takes the plain average of the two there, the default alpha pulls it toward
// the feature-weighted average (about half the average's norm away from it:
// LayerNorm features are far from isotropic), and the merge warns.
func TestRegMeanFewImages(t *testing.T) {
	_, dir := generated(t)
	a, b := filepath.Join(dir, "vit"), filepath.Join(dir, "vit-b")
	sa, sb := filepath.Join(dir, "vit.stats.safetensors"), filepath.Join(dir, "vit-b.stats.safetensors")
	// the directions no calibration input of either model spans, in the
	// augmented space [x, 1] of the classifier with its bias
	const d = 129
	sum := mat.NewSymDense(d, nil)
	for _, p := range []string{sa, sb} {
		f, err := stats.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		s, err := f.Module("classifier")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range d - 1 {
			for j := i; j < d-1; j++ {
				sum.SetSym(i, j, sum.At(i, j)+s.Gram[i*(d-1)+j])
			}
			sum.SetSym(i, d-1, sum.At(i, d-1)+s.Sum[i])
		}
		sum.SetSym(d-1, d-1, sum.At(d-1, d-1)+float64(s.Count))
	}
	var eig mat.EigenSym
	if !eig.Factorize(sum, true) {
		t.Fatal("eigendecomposition failed")
	}
	vals := eig.Values(nil)
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	var unseen []int
	for i, v := range vals {
		if v < 1e-9*vals[len(vals)-1] {
			unseen = append(unseen, i)
		}
	}
	if len(unseen) < 65 {
		t.Fatalf("%d unseen directions", len(unseen))
	}
	// the classifiers as [out, 129] matrices
	aug := func(m *checkpoint.Model) *mat.Dense {
		w, bias := floats(t, m, "classifier.weight"), floats(t, m, "classifier.bias")
		out := mat.NewDense(len(bias), d, nil)
		for o := range len(bias) {
			for c := range d - 1 {
				out.Set(o, c, float64(w[o*(d-1)+c]))
			}
			out.Set(o, d-1, float64(bias[o]))
		}
		return out
	}
	var avg mat.Dense
	avg.Add(aug(open(t, a)), aug(open(t, b)))
	avg.Scale(0.5, &avg)
	proj := func(w *mat.Dense) float64 { // norm of w restricted to the unseen directions
		var s float64
		for _, i := range unseen {
			var c mat.VecDense
			c.MulVec(w, vecs.ColView(i))
			s += mat.Dot(&c, &c)
		}
		return math.Sqrt(s)
	}
	dist := func(alpha float64) (float64, []string) {
		out := filepath.Join(t.TempDir(), "m")
		plan := &merge.Plan{Method: "regmean", DType: "f32", Params: merge.Params{}, Models: []merge.ModelInput{
			{Path: a, Params: merge.Params{"stats": merge.Text(sa)}}, {Path: b, Params: merge.Params{"stats": merge.Text(sb)}}}}
		if alpha != 0 { // 0: the default
			plan.Params["alpha"] = merge.Num(alpha)
		}
		rep, err := merge.Execute(context.Background(), plan, out, checkpoint.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var diff mat.Dense
		diff.Sub(aug(open(t, out)), &avg)
		return proj(&diff) / proj(&avg), rep.Notes
	}
	d1, _ := dist(1)
	d9, notes := dist(0)
	t.Logf("merged classifier in the %d unseen directions, relative distance to the average: %.3f (alpha 1: %.3f)", len(unseen), d9, d1)
	// alpha 1 used to zero the unseen directions (distance 1); the default
	// alpha pulls them toward the feature-weighted average
	if d1 > 0.01 || d9 > 0.6 {
		t.Errorf("distance to the average in the unseen directions %.3f (alpha 1: %.3f)", d9, d1)
	}
	if !slices.ContainsFunc(notes, func(n string) bool {
		return strings.Contains(n, "rank below its size") && strings.Contains(n, "classifier (model 1: 32 samples for 129 features)")
	}) {
		t.Errorf("notes %q", notes)
	}
}

// TestDeterministic (issue item 7): errors and outputs are the same on
// every run.
func TestDeterministic(t *testing.T) {
	_, dir := generated(t)
	llama := filepath.Join(dir, "llama")
	var msgs []string
	for range 3 {
		plan := &merge.Plan{Method: "pleas", Params: merge.Params{"stats": merge.Text(filepath.Join(dir, "gpt2.stats.safetensors"))}, Models: []merge.ModelInput{{Path: llama}, {Path: llama}}}
		_, err := merge.Execute(context.Background(), plan, filepath.Join(t.TempDir(), "p"), checkpoint.WriteOptions{})
		if err == nil {
			t.Fatal("pleas merged a Llama")
		}
		msgs = append(msgs, err.Error())
	}
	if msgs[0] != msgs[1] || msgs[1] != msgs[2] || strings.Contains(msgs[0], "wtool_collect") {
		t.Errorf("messages %q", msgs)
	}
	m := open(t, filepath.Join(dir, "gpt2"))
	var files [][]byte
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "c", "x")
		compress(t, m, out, lowrank.CompressOptions{Method: "svd", Rule: lowrank.RankRule{Rank: 8}})
		b, _ := os.ReadFile(filepath.Join(out, "model.safetensors"))
		c, _ := os.ReadFile(filepath.Join(out, "compression.json"))
		files = append(files, append(b, c...))
		_ = i
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Error("two compressions differ")
	}
}
