package fisher

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func writeST(t *testing.T, path string, md map[string]string, ts ...*tensors.Tensor) {
	t.Helper()
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, md); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, buf.Bytes(), 0o644)
}

// TestForeignFisherFiles: a plain safetensors file with one float tensor
// per parameter (what FWSVD scripts and a PyTorch loop save: no metadata,
// or {"format": "pt"}, any float dtype) is accepted when every tensor
// matches the model by name and shape, and refused naming the tensor
// otherwise.
func TestForeignFisherFiles(t *testing.T) {
	dir := t.TempDir()
	w, _ := tensors.FromFloat32("fc1.weight", tensors.F32, []int64{2, 3}, make([]float32, 6))
	b, _ := tensors.FromFloat32("fc1.bias", tensors.F32, []int64{2}, make([]float32, 2))
	model := filepath.Join(dir, "model.safetensors")
	writeST(t, model, map[string]string{"format": "pt"}, w, b)
	m, _ := checkpoint.Open(model)
	defer m.Close()
	fw, _ := tensors.FromFloat32("fc1.weight", tensors.BF16, []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6})
	cases := []struct {
		name    string
		md      map[string]string
		ts      []*tensors.Tensor
		openErr string
		fitErr  string
	}{
		{"no metadata, bf16", nil, []*tensors.Tensor{fw}, "", ""},
		{"pt metadata", map[string]string{"format": "pt"}, []*tensors.Tensor{fw}, "", ""},
		{"another model", nil, []*tensors.Tensor{func() *tensors.Tensor {
			x, _ := tensors.FromFloat32("fc2.weight", tensors.F32, []int64{2, 3}, make([]float32, 6))
			return x
		}()}, "", `"fc2.weight" is not in the model`},
		{"wrong shape", nil, []*tensors.Tensor{func() *tensors.Tensor {
			x, _ := tensors.FromFloat32("fc1.weight", tensors.F32, []int64{3, 2}, make([]float32, 6))
			return x
		}()}, "", `"fc1.weight" has shape [3 2]`},
		{"integer tensor", nil, []*tensors.Tensor{{Name: "fc1.bias", DType: tensors.I64, Shape: []int64{2}, Data: make([]byte, 16)}}, "must be floating point", ""},
		{"another format", map[string]string{"format": "wtool-stats"}, []*tensors.Tensor{fw}, `format is "wtool-stats"`, ""},
	}
	for i, c := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".safetensors")
		writeST(t, p, c.md, c.ts...)
		f, err := Open(p)
		if c.openErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.openErr) {
				t.Errorf("%d %s: open: %v", i, c.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		err = f.CheckAgainst(m)
		if c.fitErr == "" && err != nil || c.fitErr != "" && (err == nil || !strings.Contains(err.Error(), c.fitErr)) {
			t.Errorf("%s: check: %v", c.name, err)
		}
		if c.fitErr == "" {
			v, err := f.Get("fc1.weight")
			if err != nil || v[5] != 6 || !f.Foreign {
				t.Errorf("%s: values %v %v", c.name, v, err)
			}
		}
		f.Close()
	}
}
