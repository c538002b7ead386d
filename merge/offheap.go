package merge

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// offHeapWords returns n zeroed words outside the Go heap (an anonymous
// mapping) and the function that unmaps them: memory that a kernel holds
// for one tensor and that must be returned to the system the moment the
// tensor is done, not when the garbage collector gets to it (the collector
// lets the heap grow to twice the live data first). The words must not be
// used after free; free may be called more than once, from any goroutine.
func offHeapWords(n int) ([]uint64, func(), error) {
	if n == 0 {
		return nil, func() {}, nil
	}
	b, err := unix.Mmap(-1, 0, 8*n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping %d bytes: %w", 8*n, err)
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), n)
	var freed atomic.Bool
	return words, func() {
		if freed.CompareAndSwap(false, true) {
			_ = unix.Munmap(b)
		}
	}, nil
}
