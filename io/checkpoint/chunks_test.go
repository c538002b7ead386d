package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// chunkCase is a set of tensors, some larger than a chunk and not a
// multiple of it, written once whole and once chunk by chunk.
func chunkCase(t *testing.T) []*tensors.Tensor {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	var ts []*tensors.Tensor
	for _, c := range []struct {
		name  string
		dt    tensors.DType
		shape []int64
	}{
		{"a.big", tensors.BF16, []int64{ChunkSize/2 + 3, 3}}, // 3 chunks, last partial
		{"b.f32", tensors.F32, []int64{1000, 1100}},
		{"c.small", tensors.F16, []int64{7}},
		{"d.ids", tensors.I64, []int64{5}},
		{"e.empty", tensors.F32, []int64{0, 4}},
	} {
		n, _ := tensors.NumElements(c.shape)
		vals := make([]float32, n)
		for i := range vals {
			vals[i] = float32(r.NormFloat64())
		}
		var x *tensors.Tensor
		var err error
		if c.dt.IsFloat() {
			x, err = tensors.FromFloat32(c.name, c.dt, c.shape, vals)
		} else {
			x, err = tensors.New(c.name, c.dt, c.shape)
			for i := range x.Data {
				x.Data[i] = byte(r.IntN(256))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, x)
	}
	return ts
}

func TestChunkedWriteIsIdentical(t *testing.T) {
	ts := chunkCase(t)
	m := byName(ts)
	var entries []safetensors.Entry
	for _, x := range ts {
		entries = append(entries, safetensors.Entry{Name: x.Name, DType: x.DType, Shape: x.Shape})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		return m[e.Name], nil, nil
	}
	dir := t.TempDir()
	whole := filepath.Join(dir, "whole.safetensors")
	if _, err := Write(context.Background(), whole, entries, produce, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{1, ChunkSize, 64 << 20} {
		var calls atomic.Int64
		opts := WriteOptions{MaxMemory: limit, Workers: 3, Chunks: func(e safetensors.Entry) ChunkFunc {
			if e.Name == "c.small" {
				return nil // this one through the producer
			}
			return func(_ context.Context, off int64, dst []byte) error {
				calls.Add(1)
				if off%int64(e.DType.Bits()/8) != 0 || len(dst)%(e.DType.Bits()/8) != 0 || len(dst) > ChunkSize {
					t.Errorf("%s: chunk at %d of %d bytes", e.Name, off, len(dst))
				}
				copy(dst, m[e.Name].Data[off:])
				return nil
			}
		}}
		out := filepath.Join(dir, "chunked.safetensors")
		w, err := Write(context.Background(), out, entries, produce, opts)
		if err != nil {
			t.Fatal(err)
		}
		if w.Tensors != len(ts) {
			t.Errorf("limit %d: %d tensors written, want %d", limit, w.Tensors, len(ts))
		}
		a, _ := os.ReadFile(whole)
		b, _ := os.ReadFile(out)
		if !bytes.Equal(a, b) {
			t.Fatalf("limit %d: chunked output differs from the whole-tensor output", limit)
		}
		// a.big: 4 chunks (3 whole, one of 18 bytes), b.f32: 2 (4.4 MB), d.ids: 1; e.empty none
		if got := calls.Load(); got != 7 {
			t.Errorf("limit %d: %d chunk calls, want 7", limit, got)
		}
		os.Remove(out)
	}
}

func TestChunkedNonFiniteAndErrors(t *testing.T) {
	e := safetensors.Entry{Name: "w", DType: tensors.F16, Shape: []int64{ChunkSize}}
	dir := t.TempDir()
	cases := []struct {
		name  string
		fill  ChunkFunc
		allow bool
		check func(error) bool
	}{
		{"overflow", func(_ context.Context, off int64, dst []byte) error {
			vals := make([]float32, len(dst)/2)
			if off > 0 {
				vals[10] = 70000 // finite, but not in float16
			}
			return tensors.EncodeFloat32(dst, vals, tensors.F16)
		}, false, func(err error) bool {
			var nf *NonFiniteError
			return errors.As(err, &nf) && nf.Tensor == "w" && nf.Index == ChunkSize/2+10 && math.IsInf(nf.Value, 1)
		}},
		{"allowed", func(_ context.Context, off int64, dst []byte) error {
			vals := make([]float32, len(dst)/2)
			vals[0] = float32(math.NaN())
			return tensors.EncodeFloat32(dst, vals, tensors.F16)
		}, true, func(err error) bool { return err == nil }},
		{"failure", func(_ context.Context, off int64, dst []byte) error {
			return errors.New("boom")
		}, false, func(err error) bool { return err != nil && err.Error() == `tensor "w": boom` }},
	}
	for _, c := range cases {
		out := filepath.Join(dir, c.name+".safetensors")
		_, err := Write(context.Background(), out, []safetensors.Entry{e}, nil,
			WriteOptions{AllowNonFinite: c.allow, Chunks: func(safetensors.Entry) ChunkFunc { return c.fill }})
		if !c.check(err) {
			t.Errorf("%s: got error %v", c.name, err)
		}
		if _, statErr := os.Stat(out); (err == nil) != (statErr == nil) {
			t.Errorf("%s: output exists=%v with error %v", c.name, statErr == nil, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestChunkedCancel(t *testing.T) {
	e := safetensors.Entry{Name: "w", DType: tensors.F32, Shape: []int64{64 << 20}}
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	dir := t.TempDir()
	_, err := Write(ctx, filepath.Join(dir, "x.safetensors"), []safetensors.Entry{e}, nil, WriteOptions{
		Chunks: func(safetensors.Entry) ChunkFunc {
			return func(ctx context.Context, off int64, dst []byte) error {
				if n.Add(1) == 3 {
					cancel()
				}
				return ctx.Err()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if n.Load() > 10 {
		t.Errorf("%d chunks filled after cancellation", n.Load())
	}
}
