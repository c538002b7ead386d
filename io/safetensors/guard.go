package safetensors

import (
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"unsafe"

	"github.com/wtool/wtool/internal/fault"
)

// FaultError reports that reading memory-mapped tensor bytes failed: the
// file was truncated or changed underneath the mapping while it was read
// (the kernel signals SIGBUS), or its storage failed.
type FaultError struct {
	File   string // the mapped file
	Tensor string // the tensor being read, "" if unknown
	Addr   uintptr
}

func (e *FaultError) Error() string {
	what := e.File
	switch {
	case e.File == "" && e.Tensor != "":
		what = fmt.Sprintf("tensor %q", e.Tensor)
	case e.File == "":
		what = "a mapped input"
	case e.Tensor != "":
		what = fmt.Sprintf("%s: tensor %q", e.File, e.Tensor)
	}
	return fmt.Sprintf("%s: reading the mapped file failed (was it truncated or changed while wtool ran?)", what)
}

// Guard runs fn on the calling goroutine and turns a memory fault while it
// runs (a read of a mapped file that was truncated under it) into a
// *FaultError naming file and tensor, instead of a crash. The file and
// tensor are found from the faulting address when it lies in a file this
// package mapped; file and tensor name them otherwise. Faults are caught
// only on the goroutine that calls Guard: every goroutine that reads mapped
// bytes must run its reads inside its own Guard, or hand faults back to a
// guarded goroutine (internal/fault.Group does). Other panics propagate.
func Guard(file, tensor string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if f, ok := p.(fault.Addr); ok {
				err = FaultAt(f.Addr(), file, tensor)
				return
			}
			panic(p)
		}
	}()
	return fn()
}

// FaultAt describes a memory fault at addr: the file and tensor mapped
// there, or the given ones when addr lies in no mapping of this package.
func FaultAt(addr uintptr, file, tensor string) *FaultError {
	if f, t, ok := lookupAddr(addr); ok {
		file = f
		if t != "" {
			tensor = t
		}
	}
	return &FaultError{File: file, Tensor: tensor, Addr: addr}
}

// mapping is one mapped file.
type mapping struct {
	lo, hi uintptr
	f      *File
}

var mappings struct {
	sync.RWMutex
	list []mapping // sorted by lo
	// retired holds the most recently unmapped files: a fault unwinds the
	// stack through deferred Closes before the top level describes it
	retired [64]mapping
	next    int
}

func addMapping(f *File, b []byte) {
	if len(b) == 0 {
		return
	}
	lo := uintptr(unsafePointer(b))
	m := mapping{lo: lo, hi: lo + uintptr(len(b)), f: f}
	mappings.Lock()
	i, _ := slices.BinarySearchFunc(mappings.list, lo, func(m mapping, a uintptr) int { return cmpUintptr(m.lo, a) })
	mappings.list = slices.Insert(mappings.list, i, m)
	mappings.Unlock()
}

func removeMapping(b []byte) {
	if len(b) == 0 {
		return
	}
	lo := uintptr(unsafePointer(b))
	mappings.Lock()
	mappings.list = slices.DeleteFunc(mappings.list, func(m mapping) bool {
		if m.lo == lo {
			mappings.retired[mappings.next%len(mappings.retired)] = m
			mappings.next++
		}
		return m.lo == lo
	})
	mappings.Unlock()
}

// lookupAddr names the file and tensor whose mapped bytes hold addr.
func lookupAddr(addr uintptr) (file, tensor string, ok bool) {
	mappings.RLock()
	defer mappings.RUnlock()
	i, found := slices.BinarySearchFunc(mappings.list, addr, func(m mapping, a uintptr) int { return cmpUintptr(m.lo, a) })
	if !found {
		i--
	}
	var m mapping
	switch {
	case i >= 0 && i < len(mappings.list) && addr < mappings.list[i].hi:
		m = mappings.list[i]
	default: // a file closed since, newest first
		for k := 1; k <= len(mappings.retired); k++ {
			r := mappings.retired[(mappings.next-k+2*len(mappings.retired))%len(mappings.retired)]
			if r.f != nil && r.lo <= addr && addr < r.hi {
				m = r
				break
			}
		}
		if m.f == nil {
			return "", "", false
		}
	}
	off := int64(addr-m.lo) - m.f.Header.DataOffset
	ts := m.f.Header.Tensors // in data order
	j, _ := slices.BinarySearchFunc(ts, off, func(t TensorInfo, o int64) int {
		switch {
		case t.End <= o:
			return -1
		case t.Begin > o:
			return 1
		}
		return 0
	})
	if off >= 0 && j < len(ts) && ts[j].Begin <= off && off < ts[j].End {
		tensor = ts[j].Name
	}
	return m.f.Path, tensor, true
}

func cmpUintptr(a, b uintptr) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }
