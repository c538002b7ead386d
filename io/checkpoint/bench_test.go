package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// benchModel writes n random F32 matrices of rows x cols to a file.
func benchModel(b *testing.B, n, rows, cols int) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "in.safetensors")
	var entries []safetensors.Entry
	for i := range n {
		entries = append(entries, safetensors.Entry{Name: fmt.Sprintf("w%03d", i), DType: tensors.F32, Shape: []int64{int64(rows), int64(cols)}})
	}
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(i%977) * 0.001
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t, err := tensors.FromFloat32(e.Name, tensors.F32, e.Shape, vals)
		return t, nil, err
	}
	if _, err := Write(context.Background(), path, entries, produce, WriteOptions{}); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkConvertBF16 converts a 128 MiB F32 checkpoint to BF16 (bench/convert.sh
// measures the 1 GiB case against cp).
func BenchmarkConvertBF16(b *testing.B) {
	in := benchModel(b, 16, 2048, 1024)
	m, err := Open(in)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(b.TempDir(), "out.safetensors")
	b.SetBytes(m.TotalSize())
	for b.Loop() {
		if _, err := Convert(context.Background(), m, out, tensors.BF16, WriteOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
	}
	os.Remove(out)
}

func BenchmarkOpenHeaderOnly(b *testing.B) {
	in := benchModel(b, 64, 64, 64)
	for b.Loop() {
		m, err := Open(in)
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}
