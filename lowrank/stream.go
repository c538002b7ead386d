package lowrank

import (
	"fmt"
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

// byteSpill keeps encoded tensors in a temporary file until their entries
// are written; each is read back once, and its disk space freed then.
type byteSpill struct {
	mu   sync.Mutex
	f    *os.File
	off  int64
	at   map[string][2]int64 // offset, size
	tmpl map[string]*tensors.Tensor
}

func newByteSpill(dir string) (*byteSpill, error) {
	f, err := os.CreateTemp(dir, ".wtool-spill-*")
	if err != nil {
		return nil, err
	}
	return &byteSpill{f: f, at: map[string][2]int64{}, tmpl: map[string]*tensors.Tensor{}}, nil
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

// take reads back the tensor of entry e.
func (s *byteSpill) take(e safetensors.Entry) (*tensors.Tensor, error) {
	s.mu.Lock()
	loc, ok := s.at[e.Name]
	tmpl := s.tmpl[e.Name]
	delete(s.at, e.Name)
	delete(s.tmpl, e.Name)
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("tensor %q was not set aside", e.Name)
	}
	buf := make([]byte, loc[1])
	if _, err := s.f.ReadAt(buf, loc[0]); err != nil {
		return nil, fmt.Errorf("reading tensor %q back: %w", e.Name, err)
	}
	punchHole(s.f, loc[0], loc[1])
	return &tensors.Tensor{Name: tmpl.Name, DType: tmpl.DType, Shape: tmpl.Shape, Data: buf}, nil
}

// remove deletes the file.
func (s *byteSpill) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}
