package permute

import (
	"container/list"
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// Source gives the float32 values and shape of a model's tensors by name.
// Matching reads each tensor many times, a block at a time; the sources of
// this package ([CheckpointSource], [MemorySource]) also give the stored
// bytes, so that a checkpoint is read in its own dtype (bf16 stays 2 bytes
// per weight) without a decoded copy. Any other Source is read through
// Float32.
type Source interface {
	Float32(name string) ([]float32, []int64, error)
}

// rawSource is a Source that gives a tensor's stored bytes. raw returns a
// view that stays valid until the source is closed; done tells the source
// that the caller has finished with the tensor for now (every raw is paired
// with one done); prefetch reads a tensor it will soon need into memory,
// blocking while it does (callers run it beside their computation).
type rawSource interface {
	raw(name string) (rawTensor, error)
	done(name string)
	prefetch(name string)
}

// rawTensor is a tensor's stored bytes and where they come from.
type rawTensor struct {
	name  string
	file  string // the file holding it, for fault and non-finite messages; "" in memory
	dtype tensors.DType
	shape []int64
	data  []byte
}

// Tensor32 is a float32 tensor in memory.
type Tensor32 struct {
	Data  []float32
	Shape []int64
}

// MemorySource is a model held in memory as float32 tensors.
type MemorySource map[string]Tensor32

// Float32 returns the named tensor.
func (m MemorySource) Float32(name string) ([]float32, []int64, error) {
	t, ok := m[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	return t.Data, t.Shape, nil
}

func (m MemorySource) raw(name string) (rawTensor, error) {
	t, ok := m[name]
	if !ok {
		return rawTensor{}, fmt.Errorf("no tensor %q", name)
	}
	return rawTensor{name: name, dtype: tensors.F32, shape: t.Shape, data: f32Bytes(t.Data)}, nil
}

func (MemorySource) done(string)     {}
func (MemorySource) prefetch(string) {}

// f32Bytes views float32 values as their little-endian bytes (the machines
// wtool runs on are little-endian).
func f32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// floatSource adapts a Source that only gives float32 values.
type floatSource struct{ Source }

func (f floatSource) raw(name string) (rawTensor, error) {
	v, shape, err := f.Float32(name)
	if err != nil {
		return rawTensor{}, err
	}
	return rawTensor{name: name, dtype: tensors.F32, shape: shape, data: f32Bytes(v)}, nil
}

func (floatSource) done(string)     {}
func (floatSource) prefetch(string) {}

// asRaw returns the raw view of a Source.
func asRaw(s Source) rawSource {
	if r, ok := s.(rawSource); ok {
		return r
	}
	return floatSource{s}
}

// LoadSource decodes every floating tensor named in names (all the model's
// floating tensors when names is nil) into memory. Matching does not need
// it: a [CheckpointSource] reads the checkpoint in its own dtype, a block at
// a time, in memory that does not grow with the model.
func LoadSource(m *checkpoint.Model, names []string) (MemorySource, error) {
	if names == nil {
		names = m.Names()
	}
	out := MemorySource{}
	for _, n := range names {
		info, ok := m.Info(n)
		if !ok {
			return nil, fmt.Errorf("%s: no tensor %q", m.Path, n)
		}
		if !info.DType.IsFloat() {
			continue
		}
		t, err := m.Tensor(n)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Path, err)
		}
		m.Release(n)
		out[n] = Tensor32{Data: v, Shape: info.Shape}
	}
	return out, nil
}

// DefaultCacheBytes is the cache of a [CheckpointSource] when none is given.
const DefaultCacheBytes = 1 << 30

// CheckpointSource reads the tensors of a checkpoint for matching, in the
// file's dtype, straight from the memory-mapped shards: nothing is decoded
// into a copy (matching decodes blocks of a few MiB on the fly). The
// tensors used most recently stay mapped up to a byte budget, the cache;
// the pages of the others are handed back to the kernel (they are read
// again, from the page cache or the disk, when next needed). The cache holds
// file-backed pages, which the kernel can reclaim under memory pressure:
// the process's anonymous memory does not depend on it, or on the model's
// size.
type CheckpointSource struct {
	m      *checkpoint.Model
	budget int64

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *mapped, front = most recent
	items map[string]*list.Element
}

type mapped struct {
	name  string
	size  int64
	users int // raw calls not yet matched by done
}

// NewCheckpointSource returns a source over m that keeps up to budget bytes
// of the tensors it has read mapped (0: DefaultCacheBytes; a negative budget
// releases every tensor as soon as it is done with).
func NewCheckpointSource(m *checkpoint.Model, budget int64) *CheckpointSource {
	if budget == 0 {
		budget = DefaultCacheBytes
	}
	return &CheckpointSource{m: m, budget: max(budget, 0), lru: list.New(), items: map[string]*list.Element{}}
}

// Model returns the checkpoint the source reads.
func (c *CheckpointSource) Model() *checkpoint.Model { return c.m }

// Float32 returns a decoded copy of the named tensor.
func (c *CheckpointSource) Float32(name string) ([]float32, []int64, error) {
	r, err := c.raw(name)
	if err != nil {
		return nil, nil, err
	}
	defer c.done(name)
	n, _ := tensors.NumElements(r.shape)
	v := make([]float32, n)
	if err := guard(r, func() error { return tensors.DecodeFloat32(v, r.data, r.dtype) }); err != nil {
		return nil, nil, err
	}
	return v, slices.Clone(r.shape), nil
}

func (c *CheckpointSource) raw(name string) (rawTensor, error) {
	info, ok := c.m.Info(name)
	if !ok {
		return rawTensor{}, fmt.Errorf("%s: tensor %q: %w", c.m.Path, name, checkpoint.ErrNotFound)
	}
	if !info.DType.IsFloat() {
		return rawTensor{}, fmt.Errorf("%s: tensor %q is %s; matching needs floating-point weights", info.File, name, info.DType)
	}
	t, err := c.m.Tensor(name)
	if err != nil {
		return rawTensor{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[name]; ok {
		e.Value.(*mapped).users++
		c.lru.MoveToFront(e)
	} else {
		c.items[name] = c.lru.PushFront(&mapped{name: name, size: info.Size, users: 1})
		c.used += info.Size
	}
	return rawTensor{name: name, file: info.File, dtype: info.DType, shape: info.Shape, data: t.Data}, nil
}

func (c *CheckpointSource) done(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[name]; ok {
		e.Value.(*mapped).users--
	}
	// release the least recently used tensors nobody is reading until the
	// mapped ones fit the budget
	for e := c.lru.Back(); e != nil && c.used > c.budget; {
		prev := e.Prev()
		if it := e.Value.(*mapped); it.users <= 0 {
			c.m.Release(it.name)
			c.lru.Remove(e)
			delete(c.items, it.name)
			c.used -= it.size
		}
		e = prev
	}
}

func (c *CheckpointSource) prefetch(name string) {
	c.m.Prefetch(name) // a hint; it blocks while the kernel reads the pages
}
