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
		`{"groups": {"H": 2, "QK": 8, "M": 3}, "within": {"QK": {"heads": "H", "dim": 4}},
		  "tensors": {"w": [["QK", {"size": 5}, {"group": "M", "block": 2}], {"group": "QK", "repeat": 2}], "b": [["QK", "QK"]]}}`,
		`{"groups": {"H": 2, "V": 6}, "within": {"V": {"heads": "H", "dim": 3}}, "tensors": {"q": [{"group": "H", "block": 4}, null], "o": [null, {"group": "V", "repeat": 3}]}}`,
		`{"groups": {"H": 2, "V": 6}, "within": {"V": {"heads": "V", "dim": 1}}, "tensors": {"o": [["V", {"size": 0}]]}}`,
		`{"groups": {"P": 2}, "tensors": {"w": [[{"group": "P", "repeat": -1}]]}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &Spec{}
		if err := json.Unmarshal(data, s); err != nil {
			return
		}
		_ = s.String()
		// shapes that fit the spec where its sizes are small
		size := func(g string, block, repeat, given int) int64 {
			if given > 0 && given < 1<<12 {
				return int64(given)
			}
			if n, ok := s.Groups[g]; ok && n > 0 && n < 64 && block >= 0 && block < 64 && repeat >= 0 && repeat < 8 {
				return int64(n * max(block, 1) * max(repeat, 1))
			}
			return 3
		}
		shapes := map[string][]int64{}
		for name, axes := range s.Tensors {
			shape := make([]int64, len(axes))
			for i, a := range axes {
				if a.Segments == nil {
					shape[i] = size(a.Group, a.Block, a.Repeat, 0)
					continue
				}
				for _, sg := range a.Segments {
					shape[i] += size(sg.Group, sg.Block, sg.Repeat, sg.Size)
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
		p := RandomPerms(rand.New(rand.NewPCG(1, 2)), s)
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
		if err := s2.Validate(shapes); err != nil {
			t.Fatalf("a valid spec is not valid after a JSON round trip: %v\n%s", err, b)
		}
		// the inverse undoes Apply
		q := p.Inverse()
		if err := q.Check(s); err != nil {
			t.Fatalf("the inverse of a valid permutation is refused: %v", err)
		}
	})
}
