package permute

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// FuzzSpecJSON feeds arbitrary documents to the permutation-spec reader. It
// must never panic: a document is either refused with an error, or it is a
// spec that validates against the shapes it names (or is refused by
// Validate), and a valid one applies random permutations to tensors of those
// shapes without panicking, and survives a JSON round trip.
func FuzzSpecJSON(f *testing.F) {
	for _, seed := range []string{
		`{"groups": {"P": 4}, "tensors": {"w": ["P", null], "b": ["P"], "v": [null, "P"]}}`,
		`{"groups": {"H": 2}, "tensors": {"q": [{"group": "H", "block": 3}, null]}}`,
		`{"groups": {"P": 0}, "tensors": {}}`,
		`{"groups": {"P": -1}, "tensors": {"w": ["P"]}}`,
		`{"groups": {"P": 2}, "tensors": {"w": [{"group": "P", "block": -4}]}}`,
		`{"groups": {"P": 9223372036854775807}, "tensors": {"w": ["P"]}}`,
		`{"groups": {"P": 2, "P": 3}, "tensors": {"w": ["Q"]}}`,
		`{"groups": null, "tensors": null}`,
		`[]`, `{`, `{"groups": {"P": 2}, "tensors": {"w": [1, 2, 3]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Spec{}
		if err := json.Unmarshal(data, s); err != nil {
			return
		}
		_ = s.String()
		shapes := map[string][]int64{}
		for name, axes := range s.Tensors {
			shape := make([]int64, len(axes))
			for i, a := range axes {
				shape[i] = 3
				if n, ok := s.Groups[a.Group]; ok && n > 0 && n < 64 && a.Block >= 0 && a.Block < 64 {
					shape[i] = int64(n * max(a.Block, 1))
				}
			}
			shapes[name] = shape
		}
		if err := s.Validate(shapes); err != nil {
			return
		}
		if len(shapes) > 16 {
			return
		}
		p := Identity(s)
		rng := rand.New(rand.NewPCG(1, 2))
		for g := range p {
			rng.Shuffle(len(p[g]), func(i, j int) { p[g][i], p[g][j] = p[g][j], p[g][i] })
		}
		if err := p.Check(s); err != nil {
			t.Fatalf("a permutation of the spec's own groups is refused: %v", err)
		}
		for name, shape := range shapes {
			n, ok := tensors.NumElements(shape)
			if !ok || n > 1<<16 {
				continue
			}
			x, err := tensors.New(name, tensors.F32, shape)
			if err != nil {
				continue
			}
			y, err := s.Apply(x, p)
			if err != nil {
				t.Fatalf("Apply on a valid spec and shape: %v", err)
			}
			if len(y.Data) != len(x.Data) {
				t.Fatalf("Apply changed the size of %s", name)
			}
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("a valid spec does not encode: %v", err)
		}
		var s2 Spec
		if err := json.Unmarshal(b, &s2); err != nil {
			t.Fatalf("a valid spec does not read back: %v\n%s", err, b)
		}
	})
}
