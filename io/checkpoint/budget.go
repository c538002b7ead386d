package checkpoint

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wtool/wtool/io/safetensors"
)

// DefaultMaxMemory is the default budget for what a write holds ahead of
// the writer (WriteOptions.MaxMemory): an eighth of the machine's physical
// memory, at least 256 MiB.
func DefaultMaxMemory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 1 << 30
	}
	total := int64(si.Totalram) * int64(si.Unit)
	return max(total/8, 256<<20)
}

// budget is a weighted semaphore over bytes of memory.
type budget struct {
	mu    sync.Mutex
	cond  *sync.Cond
	avail int64
	limit int64
}

func newBudget(limit int64) *budget {
	b := &budget{avail: limit, limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire waits until n bytes (at most the whole budget) are free and takes
// them; it returns false when ctx is done first.
func (b *budget) acquire(ctx context.Context, n int64) bool {
	n = min(n, b.limit)
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	defer stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.avail < n {
		if ctx.Err() != nil {
			return false
		}
		b.cond.Wait()
	}
	b.avail -= n
	return ctx.Err() == nil
}

func (b *budget) release(n int64) {
	n = min(n, b.limit)
	b.mu.Lock()
	b.avail += n
	b.cond.Broadcast()
	b.mu.Unlock()
}

// NonFiniteError reports a NaN or infinite value in a tensor about to be
// written (including a finite value that overflowed the output dtype, such
// as 1e5 in float16). It is safetensors.NonFiniteError.
type NonFiniteError = safetensors.NonFiniteError

// CheckFinite returns a *NonFiniteError for the first NaN or Inf among the
// encoded bytes data of entry e, which start at byte off of the tensor.
// Non-float dtypes and 8-bit floats are not checked.
func CheckFinite(e safetensors.Entry, off int64, data []byte) error {
	return safetensors.CheckFinite(e, off, data)
}
