package permute

import (
	"container/list"
	"fmt"
	"slices"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
)

// Source gives the float32 values and shape of a model's tensors by name.
// Matching reads each tensor many times; a Source decides what stays in
// memory.
type Source interface {
	Float32(name string) ([]float32, []int64, error)
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

// LoadSource decodes every floating tensor named in names (all the model's
// floating tensors when names is nil) into memory.
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

// CheckpointSource decodes tensors of a checkpoint on demand and keeps the
// most recently used ones in memory up to a byte budget, so that matching a
// model larger than memory reads it again instead of holding it.
type CheckpointSource struct {
	m      *checkpoint.Model
	budget int64

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *cached, front = most recent
	items map[string]*list.Element
}

type cached struct {
	name string
	t    Tensor32
}

// NewCheckpointSource returns a source over m that caches up to budget bytes
// of decoded float32 tensors (budget <= 0: no limit).
func NewCheckpointSource(m *checkpoint.Model, budget int64) *CheckpointSource {
	return &CheckpointSource{m: m, budget: budget, lru: list.New(), items: map[string]*list.Element{}}
}

// Float32 returns the named tensor, decoding it if it is not cached.
func (c *CheckpointSource) Float32(name string) ([]float32, []int64, error) {
	c.mu.Lock()
	if e, ok := c.items[name]; ok {
		c.lru.MoveToFront(e)
		t := e.Value.(*cached).t
		c.mu.Unlock()
		return t.Data, t.Shape, nil
	}
	c.mu.Unlock()
	t, err := c.m.Tensor(name)
	if err != nil {
		return nil, nil, err
	}
	v, err := t.Float32()
	c.m.Release(name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", c.m.Path, err)
	}
	shape := slices.Clone(t.Shape)
	c.mu.Lock()
	defer c.mu.Unlock()
	size := int64(len(v)) * 4
	for c.budget > 0 && c.used+size > c.budget && c.lru.Len() > 0 {
		old := c.lru.Remove(c.lru.Back()).(*cached)
		delete(c.items, old.name)
		c.used -= int64(len(old.t.Data)) * 4
	}
	c.items[name] = c.lru.PushFront(&cached{name: name, t: Tensor32{Data: v, Shape: shape}})
	c.used += size
	return v, shape, nil
}
