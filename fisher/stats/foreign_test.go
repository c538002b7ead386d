package stats

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// TestForeignStatisticsFiles: statistics written by another tool, without
// wtool's metadata, are read when the layout is unambiguous (every tensor a
// field of one kind; float fields in any float dtype, a count of any
// integer or float type), and refused otherwise.
func TestForeignStatisticsFiles(t *testing.T) {
	dir := t.TempDir()
	f32 := func(name string, shape []int64, v ...float32) *tensors.Tensor {
		x, err := tensors.FromFloat32(name, tensors.F32, shape, v)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	count := &tensors.Tensor{Name: "h.0.mlp.c_fc.count", DType: tensors.I32, Shape: []int64{}, Data: binary.LittleEndian.AppendUint32(nil, 7)}
	single := []*tensors.Tensor{count,
		f32("h.0.mlp.c_fc.sum", []int64{2}, 1, 2), f32("h.0.mlp.c_fc.abs_sum", []int64{2}, 3, 4),
		f32("h.0.mlp.c_fc.gram", []int64{2, 2}, 5, 6, 6, 8),
		f32("a.count", []int64{}, 3), f32("a.sum", []int64{1}, 1), f32("a.abs_sum", []int64{1}, 1), f32("a.gram", []int64{1, 1}, 2)}
	write := func(name string, md map[string]string, ts ...*tensors.Tensor) string {
		var buf bytes.Buffer
		if err := safetensors.Encode(&buf, ts, md); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, buf.Bytes(), 0o644)
		return p
	}
	f, err := Open(write("single.safetensors", nil, single...))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Kind != Single || strings.Join(f.Modules(), ",") != "a,h.0.mlp.c_fc" {
		t.Errorf("kind %s, modules %v", f.Kind, f.Modules())
	}
	m, err := f.Module("h.0.mlp.c_fc")
	if err != nil || m.Count != 7 || m.Dim != 2 || m.Gram[1] != 6 || m.Abs[1] != 4 {
		t.Errorf("module %+v %v", m, err)
	}
	if n, err := f.Count("a"); n != 3 || err != nil {
		t.Errorf("count %d %v", n, err)
	}
	// mixed kinds, unknown names, a non-integral count: refused
	bad := []struct {
		name string
		ts   []*tensors.Tensor
		want string
	}{
		{"mixed", append(single[:4:4], f32("h.0.mlp.c_fc.cross", []int64{2, 2}, 1, 2, 3, 4)), "not all of the single or all of the joint"},
		{"weights", []*tensors.Tensor{f32("fc1.weight", []int64{1, 1}, 1)}, `"fc1.weight" is not a module's statistic`},
		{"missing gram", single[:3], "h.0.mlp.c_fc.gram is missing"},
	}
	for _, b := range bad {
		if _, err := Open(write(b.name+".safetensors", nil, b.ts...)); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v", b.name, err)
		}
	}
	half := write("half-count.safetensors", nil, f32("a.count", []int64{}, 2.5), f32("a.sum", []int64{1}, 1), f32("a.abs_sum", []int64{1}, 1), f32("a.gram", []int64{1, 1}, 2))
	hf, err := Open(half)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	if _, err := hf.Module("a"); err == nil || !strings.Contains(err.Error(), "not a whole number") {
		t.Errorf("count 2.5: %v", err)
	}
}
