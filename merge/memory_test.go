package merge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// bigModel writes a checkpoint with one BF16 tensor of rows x cols values
// (Gaussian-like, from a seeded generator), produced in chunks so the test
// itself holds no whole copy.
func bigModel(t testing.TB, path string, rows, cols int64, seed uint64) {
	t.Helper()
	e := safetensors.Entry{Name: "model.layers.0.mlp.w", DType: tensors.BF16, Shape: []int64{rows, cols}}
	opts := checkpoint.WriteOptions{Force: true, Chunks: func(safetensors.Entry) checkpoint.ChunkFunc {
		return func(_ context.Context, off int64, dst []byte) error {
			for k := 0; k+1 < len(dst); k += 2 {
				i := uint64(off)/2 + uint64(k/2)
				z := splitmix64(seed*golden + i)
				// sum of four uniforms, centred: roughly normal
				v := float32(int64(z&0xffff)+int64(z>>16&0xffff)+int64(z>>32&0xffff)+int64(z>>48)-2*0xffff) / 0x8000
				h := tensors.BF16FromFloat32(v)
				dst[k], dst[k+1] = byte(h), byte(h>>8)
			}
			return nil
		}
	}}
	produce := func(context.Context, safetensors.Entry) (*tensors.Tensor, func(), error) {
		return nil, nil, errors.New("unused")
	}
	if _, err := checkpoint.Write(context.Background(), path, []safetensors.Entry{e}, produce, opts); err != nil {
		t.Fatal(err)
	}
}

// heapSampler records the peak of live heap objects while it runs.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak atomic.Uint64
}

func sampleHeap() *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > h.peak.Load() {
				h.peak.Store(v)
			}
			select {
			case <-h.stop:
				return
			default:
				runtime.Gosched()
			}
		}
	}()
	return h
}

func (h *heapSampler) Stop() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak.Load()
}

func allocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestMergeMemoryBoundedAndCancellable merges three 50M-element BF16 tensors (100 MB
// each) with TIES, DARE-TIES and SLERP and bounds the memory the merge
// allocates: every byte the merge allocates, live or not, is counted
// (runtime/metrics' cumulative heap allocations), so the bound holds for the
// peak too. A whole-tensor implementation needs 50M x 8 bytes per model for
// float64 task vectors alone (400 MB); the streaming one stays under 96 MiB
// (chunk buffers, the top-k selection's histograms and candidates, one
// float64 per 4096 elements for the sums).
func TestMergeMemoryBoundedAndCancellable(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 400 MB")
	}
	dir := t.TempDir()
	const rows, cols = 5000, 10000 // 50M elements
	pa, pb, pbase := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "base.safetensors")
	bigModel(t, pa, rows, cols, 1)
	bigModel(t, pb, rows, cols, 2)
	bigModel(t, pbase, rows, cols, 3)
	out := filepath.Join(dir, "out.safetensors")
	const bound = 96 << 20
	for _, p := range []*Plan{
		{Method: "ties", Models: []ModelInput{{Path: pa}, {Path: pb}}, Base: pbase, Params: Params{"density": Num(0.5)}},
		{Method: "dare-ties", Models: []ModelInput{{Path: pa}, {Path: pb}}, Base: pbase, Params: Params{"density": Num(0.5), "rescale": Text("l1")}},
		{Method: "slerp", Models: []ModelInput{{Path: pa}, {Path: pb}}, Params: Params{"t": Num(0.3)}},
	} {
		runtime.GC()
		h := sampleHeap()
		before := allocated()
		_, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{Force: true})
		alloc := allocated() - before
		peak := h.Stop()
		if err != nil {
			t.Fatalf("%s: %v", p.Method, err)
		}
		t.Logf("%s: %.1f MiB allocated in all, peak live heap %.1f MiB", p.Method, float64(alloc)/(1<<20), float64(peak)/(1<<20))
		if alloc > bound {
			t.Errorf("%s allocated %.1f MiB merging 50M-element tensors (bound %d MiB)", p.Method, float64(alloc)/(1<<20), bound>>20)
		}
		os.Remove(out)
	}
	// Ctrl-C: cancelled in a pass and in the final kernel, the merge stops
	// after at most a million elements per goroutine (each loop checks its
	// context every 2^20 elements) and leaves nothing behind.
	for _, at := range []int64{20e6, 80e6} {
		ctx, cancel := context.WithCancel(context.Background())
		start := processed.Load()
		var after atomic.Int64
		go func() {
			for processed.Load()-start < at {
				runtime.Gosched()
			}
			cancel()
			after.Store(processed.Load())
		}()
		p := &Plan{Method: "ties", Models: []ModelInput{{Path: pa}, {Path: pb}}, Base: pbase, Params: Params{"density": Num(0.5)}}
		_, err := Execute(ctx, p, out, checkpoint.WriteOptions{Force: true})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled at %d elements: %v", at, err)
		}
		extra := processed.Load() - after.Load()
		workers := int64(2 * runtime.GOMAXPROCS(0)) // pass goroutines and writer workers
		if limit := workers * (checkEvery + runBlocks*BlockSize + affineBlock); extra > limit {
			t.Errorf("cancelled at %d elements: %d more elements processed (limit %d)", at, extra, limit)
		}
		t.Logf("cancelled after %d elements: %d more processed", at, extra)
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("a cancelled merge left %s", out)
		}
	}
}

// TestTruncatedInput: an input truncated while it is mapped (after the
// merge opened it) is an error naming the file and the tensor, for the
// fused affine kernel, an elementwise kernel and a streaming pass, and
// nothing is left behind.
func TestTruncatedInput(t *testing.T) {
	dir := t.TempDir()
	for _, method := range []string{"linear", "slerp", "ties"} {
		pa, pb, pbase := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "base.safetensors")
		bigModel(t, pa, 1000, 1000, 1)
		bigModel(t, pb, 1000, 1000, 2)
		bigModel(t, pbase, 1000, 1000, 3)
		p := &Plan{Method: method, Models: []ModelInput{{Path: pa}, {Path: pb}}}
		switch method {
		case "slerp":
			p.Params = Params{"t": Num(0.5)}
		case "ties":
			p.Base, p.Params = pbase, Params{"density": Num(0.5)}
		}
		testHookOpened = func(*Job) { os.Truncate(pb, 4096) }
		out := filepath.Join(dir, "out.safetensors")
		_, err := Execute(context.Background(), p, out, checkpoint.WriteOptions{})
		testHookOpened = nil
		var fe *safetensors.FaultError
		if !errors.As(err, &fe) || fe.File != pb || fe.Tensor != "model.layers.0.mlp.w" {
			t.Errorf("%s: %v (%#v), want a fault in %s", method, err, fe, pb)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output left behind", method)
		}
	}
}
