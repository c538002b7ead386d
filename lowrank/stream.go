package lowrank

import (
	"fmt"
	"math"
	"os"
	"slices"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
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

// castError returns ||cast(v) - v|| / ||v|| for v encoded as t: what
// rounding to the output dtype changed, decoded a block at a time.
func castError(t *tensors.Tensor, v []float32) (float64, error) {
	var d, n float64
	es := t.DType.Bits() / 8
	back := make([]float32, min(len(v), 1<<16))
	for i0 := 0; i0 < len(v); i0 += len(back) {
		b := back[:min(len(back), len(v)-i0)]
		if err := tensors.DecodeFloat32(b, t.Data[i0*es:(i0+len(b))*es], t.DType); err != nil {
			return 0, err
		}
		for i, x := range v[i0 : i0+len(b)] {
			e := float64(b[i]) - float64(x)
			d += e * e
			n += float64(x) * float64(x)
		}
	}
	if n == 0 {
		return 0, nil
	}
	return math.Sqrt(d / n), nil
}

// byteSpill keeps encoded tensors in a temporary file until their entries
// are written; each is read back once, and its disk space freed then.
type byteSpill struct {
	mu   sync.Mutex
	f    *os.File
	off  int64
	at   map[string][2]int64 // offset, size
	mem  *recycler
	tmpl map[string]*tensors.Tensor
}

func newByteSpill(dir string, mem *recycler) (*byteSpill, error) {
	f, err := os.CreateTemp(dir, ".wtool-spill-*")
	if err != nil {
		return nil, err
	}
	return &byteSpill{f: f, at: map[string][2]int64{}, mem: mem, tmpl: map[string]*tensors.Tensor{}}, nil
}

// put writes a tensor's bytes to the file.
func (s *byteSpill) put(t *tensors.Tensor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.WriteAt(t.Data, s.off); err != nil {
		return fmt.Errorf("setting tensor %q aside: %w", t.Name, err)
	}
	s.at[t.Name] = [2]int64{s.off, int64(len(t.Data))}
	s.tmpl[t.Name] = &tensors.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape}
	s.off += int64(len(t.Data))
	return nil
}

// take reads back the tensor of entry e; release hands its buffer back.
func (s *byteSpill) take(e safetensors.Entry) (*tensors.Tensor, func(), error) {
	s.mu.Lock()
	loc, ok := s.at[e.Name]
	tmpl := s.tmpl[e.Name]
	delete(s.at, e.Name)
	delete(s.tmpl, e.Name)
	s.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q was not set aside", e.Name)
	}
	s.mem.mu.Lock()
	buf := s.mem.bytes
	s.mem.bytes = nil
	s.mem.mu.Unlock()
	if int64(cap(buf)) < loc[1] {
		buf = make([]byte, loc[1])
	}
	buf = buf[:loc[1]]
	release := func() {
		s.mem.mu.Lock()
		defer s.mem.mu.Unlock()
		if cap(buf) > cap(s.mem.bytes) {
			s.mem.bytes = buf
		}
	}
	if _, err := s.f.ReadAt(buf, loc[0]); err != nil {
		release()
		return nil, nil, fmt.Errorf("reading tensor %q back: %w", e.Name, err)
	}
	punchHole(s.f, loc[0], loc[1])
	return &tensors.Tensor{Name: tmpl.Name, DType: tmpl.DType, Shape: tmpl.Shape, Data: buf}, release, nil
}

// remove deletes the file.
func (s *byteSpill) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}
