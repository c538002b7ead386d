// Package faultinject lets tests make a memory-mapped input fail at a
// chosen tensor, deterministically: the first time the bytes of that tensor
// are handed out, the file is truncated just before them, so the first read
// of the view faults (SIGBUS) as if another program had truncated the file
// at that moment. It is inert unless a test arms it.
package faultinject

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

var (
	armed  atomic.Bool
	mu     sync.Mutex
	file   string
	tensor string
	fired  bool
)

// TruncateAt arms the injection: the next time the bytes of tensor are
// handed out from a file whose path ends with fileSuffix, the file is cut
// at the page boundary at or before the tensor's first byte. It fires once.
func TruncateAt(fileSuffix, tensorName string) {
	mu.Lock()
	defer mu.Unlock()
	file, tensor, fired = fileSuffix, tensorName, false
	armed.Store(true)
}

// Reset disarms the injection and reports whether it fired.
func Reset() bool {
	mu.Lock()
	defer mu.Unlock()
	armed.Store(false)
	f := fired
	file, tensor, fired = "", "", false
	return f
}

// BeforeView is called by the safetensors package before it returns a view
// of a tensor's mapped bytes starting at byte offset off of the file.
func BeforeView(path, name string, off int64) {
	if !armed.Load() {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	if fired || name != tensor || !strings.HasSuffix(path, file) {
		return
	}
	fired = true
	page := int64(os.Getpagesize())
	if err := os.Truncate(path, off&^(page-1)); err != nil {
		panic("faultinject: " + err.Error())
	}
}
