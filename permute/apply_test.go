package permute

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestGatherRangeMatchesGather checks that every window of the chunked
// gather (what ApplyCheckpoint writes chunk by chunk) equals the same bytes
// of the whole-tensor gather, for every combination of permuted axes,
// element sizes and window boundaries (inside a run, across runs, across
// rows).
func TestGatherRangeMatchesGather(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		shape []int64
		moved []bool
	}{
		{[]int64{7}, []bool{true}},
		{[]int64{5, 6}, []bool{true, false}},
		{[]int64{5, 6}, []bool{false, true}},
		{[]int64{5, 6}, []bool{true, true}},
		{[]int64{3, 4, 5}, []bool{false, true, false}},
		{[]int64{3, 4, 5}, []bool{true, false, true}},
		{[]int64{4, 3, 2, 2}, []bool{true, true, false, false}}, // a convolution
		{[]int64{6, 1, 3}, []bool{true, false, true}},
	}
	for _, c := range cases {
		for _, elem := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("%v%v/elem%d", c.shape, c.moved, elem), func(t *testing.T) {
				n := elem
				idx := make([][]int, len(c.shape))
				for i, d := range c.shape {
					n *= int(d)
					if c.moved[i] {
						idx[i] = rng.Perm(int(d))
					}
				}
				src := make([]byte, n)
				for i := range src {
					src[i] = byte(rng.IntN(256))
				}
				want := make([]byte, n)
				gather(want, src, c.shape, elem, idx)
				for range 200 {
					a := rng.IntN(n/elem+1) * elem
					b := a + rng.IntN((n-a)/elem+1)*elem
					got := make([]byte, b-a)
					gatherRange(got, int64(a), src, c.shape, elem, idx)
					if !bytes.Equal(got, want[a:b]) {
						t.Fatalf("window [%d, %d): got %v, want %v", a, b, got, want[a:b])
					}
				}
				// windows that tile the tensor, as the writer asks
				for _, w := range []int{elem, 3 * elem, n} {
					got := make([]byte, n)
					for a := 0; a < n; a += w {
						gatherRange(got[a:min(a+w, n)], int64(a), src, c.shape, elem, idx)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("tiles of %d bytes differ from the whole gather", w)
					}
				}
			})
		}
	}
}
