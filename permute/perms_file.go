package permute

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// PermFormat identifies permutation files in __metadata__.
const PermFormat = "wtool-perm"

// WritePerms saves permutations as a safetensors file: one I64 tensor per
// group, named after the group, where element i is the unit of the original
// model that became unit i.
func WritePerms(ctx context.Context, path string, p Perms, opts checkpoint.WriteOptions) error {
	var entries []safetensors.Entry
	for _, g := range p.Names() {
		entries = append(entries, safetensors.Entry{Name: g, DType: tensors.I64, Shape: []int64{int64(len(p[g]))}})
	}
	opts.Metadata = map[string]string{"format": PermFormat, "version": "1",
		"meaning": "unit i of the aligned model is unit perm[i] of the original"}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t := &tensors.Tensor{Name: e.Name, DType: tensors.I64, Shape: e.Shape, Data: make([]byte, 8*len(p[e.Name]))}
		for i, v := range p[e.Name] {
			binary.LittleEndian.PutUint64(t.Data[8*i:], uint64(v))
		}
		return t, nil, nil
	}
	_, err := checkpoint.Write(ctx, path, entries, produce, opts)
	return err
}

// ReadPerms reads a file written by WritePerms.
func ReadPerms(path string) (Perms, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if f := m.Metadata()["format"]; f != PermFormat {
		return nil, fmt.Errorf("%s: not a permutation file (format %q)", path, f)
	}
	p := Perms{}
	for _, n := range m.Names() {
		t, _ := m.Tensor(n)
		if t.DType != tensors.I64 || len(t.Shape) != 1 {
			return nil, fmt.Errorf("%s: tensor %q is %s%v, want I64 [n]", path, n, t.DType, t.Shape)
		}
		v := make([]int, t.Shape[0])
		for i := range v {
			v[i] = int(int64(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
		p[n] = v
	}
	return p, nil
}
