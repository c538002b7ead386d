package fisher

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

func TestReductions(t *testing.T) {
	// F = [[1, 2, 3], [4, 5, 6]]: per input (column sums) [5, 7, 9], per
	// output (row sums) [6, 15].
	f := []float32{1, 2, 3, 4, 5, 6}
	in := PerInput(f, 2, 3)
	out := PerOutput(f, 2, 3)
	if fmt.Sprint(in) != "[5 7 9]" || fmt.Sprint(out) != "[6 15]" {
		t.Errorf("PerInput %v, PerOutput %v", in, out)
	}
}

func writeFisher(t *testing.T, dir, name string, vals []float32, batches int64, loss float64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	w, _ := tensors.FromFloat32("fc.weight", tensors.F32, []int64{2, 2}, vals)
	b, _ := tensors.FromFloat32("fc.bias", tensors.BF16, []int64{2}, vals[:2])
	if err := Write(context.Background(), p, []*tensors.Tensor{w, b}, Meta{Batches: batches, BatchSize: 8, Samples: 8 * batches, Loss: loss}, checkpoint.WriteOptions{AllowNonFinite: true}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteOpenCombine(t *testing.T) {
	dir := t.TempDir()
	a := writeFisher(t, dir, "a.safetensors", []float32{1, 2, 3, 4}, 2, 1.0)
	b := writeFisher(t, dir, "b.safetensors", []float32{3, 2, 1, 0}, 6, 2.0)
	f, err := Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if f.Meta.Batches != 2 || f.Meta.Loss != 1 || !f.Has("fc.bias") {
		t.Errorf("meta %+v", f.Meta)
	}
	if sh, _ := f.Shape("fc.bias"); len(sh) != 1 {
		t.Error("bias shape")
	}
	f.Close()
	for _, avg := range []bool{false, true} {
		out := filepath.Join(dir, fmt.Sprintf("sum-%v.safetensors", avg))
		if err := Combine(context.Background(), []string{a, b}, out, avg, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		c, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := c.Get("fc.weight")
		want := []float32{4, 4, 4, 4}
		if avg {
			want = []float32{2, 2, 2, 2}
		}
		if fmt.Sprint(v) != fmt.Sprint(want) {
			t.Errorf("average=%v: %v, want %v", avg, v, want)
		}
		// batches add; the loss is the batch-weighted mean (2*1 + 6*2) / 8
		if c.Meta.Batches != 8 || math.Abs(c.Meta.Loss-1.75) > 1e-12 {
			t.Errorf("meta %+v", c.Meta)
		}
		c.Close()
	}
}

func TestGetRejectsBadValues(t *testing.T) {
	dir := t.TempDir()
	for name, bad := range map[string]float32{"neg": -1, "nan": float32(math.NaN()), "inf": float32(math.Inf(1))} {
		p := writeFisher(t, dir, name+".safetensors", []float32{1, bad, 3, 4}, 1, 0)
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Get("fc.weight"); err == nil || !strings.Contains(err.Error(), `"fc.weight"`) || !strings.Contains(err.Error(), "index 1") {
			t.Errorf("%s: %v", name, err)
		}
		f.Close()
	}
}

func ExamplePerInput() {
	// The Fisher of a 2x3 Linear weight reduced to one importance per input
	// feature, as FWSVD scales the weight's columns by their square roots.
	f := []float32{
		0.5, 0.0, 2.0,
		0.5, 1.0, 2.0,
	}
	for j, v := range PerInput(f, 2, 3) {
		fmt.Printf("feature %d: importance %.1f, scale %.3f\n", j, v, math.Sqrt(v))
	}
	// Output:
	// feature 0: importance 1.0, scale 1.000
	// feature 1: importance 1.0, scale 1.000
	// feature 2: importance 4.0, scale 2.000
}
