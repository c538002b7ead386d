package stats

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
)

func TestAccumulatorFormula(t *testing.T) {
	a, err := NewAccumulator([]string{"fc1"}, []int{2}, false)
	if err != nil {
		t.Fatal(err)
	}
	// two batches: rows [1,2],[3,-4] then [0,1]
	a.Add("fc1", []float32{1, 2, 3, -4}, 2)
	a.Add("fc1", []float32{0, 1}, 1)
	a.AddSamples(3)
	m := a.Stats("test").Module("fc1")
	// count 3; sum [4,-1]; abs [4,7]; gram [[1+9+0, 2-12+0],[.., 4+16+1]]
	if m.Count != 3 || fmt.Sprint(m.Sum) != "[4 -1]" || fmt.Sprint(m.Abs) != "[4 7]" || fmt.Sprint(m.Gram) != "[10 -10 -10 21]" {
		t.Errorf("count %d sum %v abs %v gram %v", m.Count, m.Sum, m.Abs, m.Gram)
	}
	if fmt.Sprint(m.MeanAbs()) != fmt.Sprint([]float64{4.0 / 3, 7.0 / 3}) {
		t.Errorf("mean abs %v", m.MeanAbs())
	}
	if err := a.Add("fc2", []float32{1, 2}, 1); err == nil {
		t.Error("unknown module must fail")
	}
	if err := a.Add("fc1", []float32{1, 2, 3}, 1); err == nil {
		t.Error("wrong length must fail")
	}
	if err := a.AddJoint("fc1", []float32{1, 2}, []float32{1, 2}, 1); err == nil {
		t.Error("AddJoint on a single accumulator must fail")
	}
}

func TestMergeIsSum(t *testing.T) {
	mk := func(x []float32) *Stats {
		a, _ := NewAccumulator([]string{"m"}, []int{2}, true)
		a.AddJoint("m", x, []float32{1, 1}, 1)
		a.AddSamples(1)
		return a.Stats("")
	}
	s1, s2 := mk([]float32{1, 2}), mk([]float32{3, 4})
	if err := Merge(s1, s2); err != nil {
		t.Fatal(err)
	}
	m := s1.Modules[0]
	// gram_a = [1 2;2 4] + [9 12;12 16]; cross = [1 1;2 2] + [3 3;4 4]
	if m.Count != 2 || fmt.Sprint(m.Gram) != "[10 14 14 20]" || fmt.Sprint(m.Cross) != "[4 4 6 6]" || s1.Samples != 2 {
		t.Errorf("merged %+v", m)
	}
	single, _ := NewAccumulator([]string{"m"}, []int{2}, false)
	if err := Merge(s1, single.Stats("")); err == nil {
		t.Error("merging joint with single must fail")
	}
}

func TestFileRoundTripAndRefusals(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewAccumulator([]string{"layers.0.fc", "head"}, []int{3, 2}, false)
	a.Add("layers.0.fc", []float32{1, 2, 3}, 1)
	a.Add("head", []float32{5, 6}, 1)
	a.AddSamples(1)
	p := filepath.Join(dir, "s.safetensors")
	if err := Write(context.Background(), p, a.Stats("unit test"), checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := f.Module("head")
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != Single || f.Source != "unit test" || fmt.Sprint(f.Modules()) != "[layers.0.fc head]" || fmt.Sprint(m.Gram) != "[25 30 30 36]" {
		t.Errorf("read back %+v %+v", f, m)
	}
	if _, err := f.Module("nope"); err == nil {
		t.Error("unknown module must fail")
	}
	if err := Write(context.Background(), p, a.Stats(""), checkpoint.WriteOptions{}); err == nil {
		t.Error("existing output without Force must fail")
	}
}

func ExampleAccumulator() {
	// Statistics of one module's inputs, fed batch by batch by any engine.
	acc, _ := NewAccumulator([]string{"fc1"}, []int{2}, false)
	acc.Add("fc1", []float32{1, 2, 3, 4}, 2) // a batch of two input rows
	acc.AddSamples(2)
	m := acc.Stats("example").Module("fc1")
	fmt.Println("count", m.Count, "mean", m.Mean(), "E[x x^T]", m.SecondMoment())
	// Output:
	// count 2 mean [2 3] E[x x^T] [5 7 7 10]
}

// TestImpossibleStatisticsRefused: statistics no data can produce (no
// samples, a negative sum of squares or variance, an asymmetric Gram) are
// refused when read, naming the file and module.
func TestImpossibleStatisticsRefused(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		edit func(m *Module)
		want string
	}{
		{"zero count", func(m *Module) { m.Count = 0 }, "count is 0"},
		{"negative count", func(m *Module) { m.Count = -3 }, "count is -3"},
		{"negative diagonal", func(m *Module) { m.Gram[0] = -1 }, "cannot be negative"},
		{"negative variance", func(m *Module) { m.Gram[0] = 0.5 }, "negative variance"},
		{"asymmetric", func(m *Module) { m.Gram[1] = 99 }, "not symmetric"},
		{"negative abs", func(m *Module) { m.Abs[1] = -1 }, "absolute values"},
	}
	for i, tc := range cases {
		a, _ := NewAccumulator([]string{"fc"}, []int{2}, false)
		a.Add("fc", []float32{1, 2, 3, 5}, 2)
		a.AddSamples(2)
		s := a.Stats("test")
		tc.edit(s.Module("fc"))
		p := filepath.Join(dir, fmt.Sprintf("s%d.safetensors", i))
		if err := Write(context.Background(), p, s, checkpoint.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Module("fc")
		f.Close()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `"fc"`) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestMirrorUpper: the blocked mirror is the element-by-element one, for
// sizes around its blocks and its groups of four rows.
func TestMirrorUpper(t *testing.T) {
	for _, d := range []int{1, 2, 3, 4, 5, 63, 64, 65, 67, 128, 130, 257} {
		g := make([]float64, d*d)
		want := make([]float64, d*d)
		for i := range d {
			for j := range d {
				v := float64(i*1000 + j)
				if j < i {
					v = -1 // the lower triangle is overwritten
				}
				g[i*d+j] = v
				want[i*d+j] = float64(min(i, j)*1000 + max(i, j))
			}
		}
		mirrorUpper(g, d)
		for k := range g {
			if g[k] != want[k] {
				t.Fatalf("d=%d: element (%d, %d) is %g, want %g", d, k/d, k%d, g[k], want[k])
			}
		}
	}
}
