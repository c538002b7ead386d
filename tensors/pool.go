package tensors

import "sync"

// BufferPool recycles tensor data buffers. Streaming a model allocates one
// output buffer per tensor, most of the same few sizes; reusing them avoids
// zeroing and faulting in fresh memory for every tensor, which costs as much
// as the computation in a fast merge or conversion.
type BufferPool struct{ p sync.Pool }

// Buffers is the process-wide pool.
var Buffers BufferPool

// Get returns a buffer of n bytes with undefined contents: the caller must
// overwrite all of it.
func (b *BufferPool) Get(n int) []byte {
	if v, ok := b.p.Get().(*[]byte); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	return make([]byte, n)
}

// Put returns a buffer for reuse; it must no longer be used.
func (b *BufferPool) Put(buf []byte) {
	if cap(buf) > 0 {
		b.p.Put(&buf)
	}
}
