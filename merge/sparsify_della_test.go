package merge

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// dellaProbsRef is the keep-probability computation DELLA had before the
// argsort (sort the keys, then per entry a binary search plus the ties
// already handed out at that position), kept to check the new one against.
func dellaProbsRef(keys []uint64, d, eps float64) []float64 {
	m := len(keys)
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	taken := make([]int32, m)
	p := make([]float64, m)
	for j, k := range keys {
		pos, _ := slices.BinarySearch(sorted, k)
		rank := pos + int(taken[pos])
		taken[pos]++
		q := d
		if m > 1 {
			q = d - eps + 2*eps*float64(rank)/float64(m-1)
		}
		p[j] = q
	}
	return p
}

// TestDellaRanksMatchReference: the keep probabilities of rows of seeded
// random task vectors — with many zeros, many ties, bf16-rounded values
// (shared low bytes: radix passes skipped), f32 values, rows of 1, 2 and
// odd lengths — are bit for bit those of the sort-and-search reference.
func TestDellaRanksMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		name string
		m    int
		gen  func() (x, b float64)
	}{
		{"one", 1, func() (float64, float64) { return r.NormFloat64(), r.NormFloat64() }},
		{"two-equal", 2, func() (float64, float64) { return 1, 0.5 }},
		{"f64", 257, func() (float64, float64) { return r.NormFloat64(), r.NormFloat64() }},
		{"f32", 4096, func() (float64, float64) {
			return float64(float32(r.NormFloat64())), float64(float32(r.NormFloat64() * 1e-4))
		}},
		{"bf16", 4096, func() (float64, float64) {
			return float64(tensors.BF16ToFloat32(tensors.BF16FromFloat32(float32(r.NormFloat64())))),
				float64(tensors.BF16ToFloat32(tensors.BF16FromFloat32(float32(r.NormFloat64()))))
		}},
		{"zeros-and-ties", 1000, func() (float64, float64) {
			switch r.IntN(4) {
			case 0:
				return 0.25, 0.25 // zero delta
			case 1:
				return float64(r.IntN(5)), 0 // a few tied magnitudes, both signs below
			case 2:
				return -float64(r.IntN(5)), 0
			}
			return r.NormFloat64(), r.NormFloat64()
		}},
		{"all-zero", 300, func() (float64, float64) { return 3, 3 }},
		{"all-tied", 300, func() (float64, float64) { return 1, 1 + float64(1-2*r.IntN(2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, de := range [][2]float64{{0.5, 0.15}, {0.3, 0.29}, {0.9, 0.05}} {
				x, b := make([]float64, tc.m), make([]float64, tc.m)
				for j := range x {
					x[j], b[j] = tc.gen()
				}
				in := func(v []float64) *Input {
					f := make([]float32, len(v))
					for j := range v {
						f[j] = float32(v[j])
					}
					tt, _ := tensors.FromFloat32("w", tensors.F32, []int64{int64(len(v))}, f)
					return &Input{Tensor: "w", DType: tensors.F32, Shape: tt.Shape, Data: tt.Data}
				}
				ins := []*Input{in(x), in(b)}
				tr := &dellaTrim{ins: ins, dens: []float64{de[0]}, eps: []float64{de[1]}, sparse: []bool{true}, rows: dellaRows([]int64{int64(tc.m)}, tc.m)}
				c := &dellaRow{model: -1}
				if err := tr.row(c, 0, 0); err != nil {
					t.Fatal(err)
				}
				keys := make([]uint64, tc.m)
				for j := range keys {
					keys[j] = math.Float64bits(math.Abs(float64(float32(x[j])) - float64(float32(b[j]))))
				}
				want := dellaProbsRef(keys, de[0], de[1])
				for j := range want {
					if math.Float64bits(c.p[j]) != math.Float64bits(want[j]) {
						t.Fatalf("density %v: entry %d: p %v, reference %v", de, j, c.p[j], want[j])
					}
				}
				// the cache is reused: a second row through the same buffers
				x2 := slices.Clone(x)
				slices.Reverse(x2)
				tr.ins[0] = in(x2)
				c.model = -1 // the cached row is stale
				if err := tr.row(c, 0, 0); err != nil {
					t.Fatal(err)
				}
				for j := range keys {
					keys[j] = math.Float64bits(math.Abs(float64(float32(x2[j])) - float64(float32(b[j]))))
				}
				want = dellaProbsRef(keys, de[0], de[1])
				for j := range want {
					if math.Float64bits(c.p[j]) != math.Float64bits(want[j]) {
						t.Fatalf("density %v, reused buffers: entry %d: p %v, reference %v", de, j, c.p[j], want[j])
					}
				}
			}
		})
	}
}
