package lowrank

import (
	"fmt"
	"slices"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// prefetcher reads the input pages of the next target into memory while
// the current one is factored, so that reading the checkpoint overlaps the
// SVD instead of alternating with it (one matrix is computed at a time).
// The targets are computed in name order (the writer's order within a
// shard); a wrong guess only wastes a read-ahead.
type prefetcher struct {
	m     *checkpoint.Model
	names []string // sorted
	wg    sync.WaitGroup
}

func newPrefetcher(m *checkpoint.Model, names []string) *prefetcher {
	return &prefetcher{m: m, names: slices.Sorted(slices.Values(names))}
}

// next starts reading the target after name.
func (p *prefetcher) next(name string) {
	i, ok := slices.BinarySearch(p.names, name)
	if !ok || i+1 >= len(p.names) {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.m.Prefetch(p.names[i+1])
	}()
}

// wait returns once no read-ahead is running (before the model may be
// closed).
func (p *prefetcher) wait() { p.wg.Wait() }

// recycler keeps the largest float32 matrix and byte buffer handed back,
// for the next target: with one matrix computed at a time, consecutive
// targets reuse the same memory instead of leaving a garbage matrix each
// for the collector (which let the heap reach twice the matrices in
// flight). A process-wide sync.Pool does not do: it can hold several stale
// big buffers at once.
type recycler struct {
	mu    sync.Mutex
	f32   []float32
	bytes []byte
}

// floats returns n float32s (contents undefined).
func (r *recycler) floats(n int) []float32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cap(r.f32) >= n {
		v := r.f32[:n]
		r.f32 = nil
		return v
	}
	return make([]float32, n)
}

// putFloats hands a matrix back; it must no longer be used.
func (r *recycler) putFloats(v []float32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cap(v) > cap(r.f32) {
		r.f32 = v
	}
}

// encode encodes values as a tensor whose bytes are recycled; release hands
// them back (call it once the tensor is written).
func (r *recycler) encode(name string, dt tensors.DType, shape []int64, values []float32) (*tensors.Tensor, func(), error) {
	size, err := tensors.ByteSize(dt, shape)
	if err != nil {
		return nil, nil, err
	}
	if int64(len(values))*int64(dt.Bits())/8 != size {
		return nil, nil, fmt.Errorf("%s: %d values for shape %v", name, len(values), shape)
	}
	r.mu.Lock()
	buf := r.bytes
	r.bytes = nil
	r.mu.Unlock()
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	release := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if cap(buf) > cap(r.bytes) {
			r.bytes = buf
		}
	}
	if err := tensors.EncodeFloat32(buf, values, dt); err != nil {
		release()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return &tensors.Tensor{Name: name, DType: dt, Shape: shape, Data: buf}, release, nil
}
