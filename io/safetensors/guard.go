package safetensors

import (
	"fmt"
	"runtime/debug"
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
	if e.Tensor != "" {
		what = fmt.Sprintf("%s: tensor %q", e.File, e.Tensor)
	}
	return fmt.Sprintf("%s: reading the mapped file failed (was it truncated or changed while wtool ran?)", what)
}

// Guard runs fn on the calling goroutine and turns a memory fault while it
// runs (a read of a mapped file that was truncated under it) into a
// *FaultError naming file and tensor, instead of a crash. Faults are caught
// only on the goroutine that calls Guard: every goroutine that reads mapped
// bytes must run its reads inside its own Guard. Other panics propagate.
func Guard(file, tensor string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if f, ok := p.(interface {
				error
				Addr() uintptr
			}); ok {
				err = &FaultError{File: file, Tensor: tensor, Addr: f.Addr()}
				return
			}
			panic(p)
		}
	}()
	return fn()
}
