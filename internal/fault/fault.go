// Package fault turns memory faults and panics on worker goroutines into
// values the goroutine that started the work can handle. A read of a
// memory-mapped file that was truncated underneath raises SIGBUS; with
// debug.SetPanicOnFault the Go runtime turns it into a panic, but only on
// the goroutine that set it, and a panic on any goroutine other than the
// one that recovers it ends the process. Helpers that fan work out to
// goroutines use Go/Wait (or Catch) so that a fault or a panic in a worker
// is re-raised on the caller, where safetensors.Guard (for faults) or the
// command's top level (for panics) handles it.
package fault

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// Addr is implemented by the runtime error a memory fault raises when
// debug.SetPanicOnFault is on.
type Addr interface {
	error
	Addr() uintptr
}

// IsFault reports whether a recovered panic value is a memory fault.
func IsFault(p any) bool {
	_, ok := p.(Addr)
	return ok
}

// PanicError is a panic recovered from a worker goroutine: a bug in wtool.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error: %v", e.Value)
}

// Failure is an ordinary error raised as a panic by code that has no error
// return (a kernel function, say) with Fail; Catch and Group pass it
// through unchanged, and whoever recovers it reports Err as the error it is,
// not as an internal error.
type Failure struct{ Err error }

func (f *Failure) Error() string { return f.Err.Error() }

// Unwrap returns the error.
func (f *Failure) Unwrap() error { return f.Err }

// Fail raises err as a *Failure.
func Fail(err error) { panic(&Failure{Err: err}) }

// Catch runs fn with faults turned into panics and returns what it raised:
// nil when fn returned normally, else the recovered value (a memory fault
// satisfies Addr; anything else is wrapped in a *PanicError with its stack
// unless it already is one).
func Catch(fn func()) (raised any) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(Addr); ok {
				raised = p
				return
			}
			if pe, ok := p.(*PanicError); ok {
				raised = pe
				return
			}
			if f, ok := p.(*Failure); ok {
				raised = f
				return
			}
			raised = &PanicError{Value: p, Stack: debug.Stack()}
		}
	}()
	fn()
	return nil
}

// Group runs functions on goroutines and re-raises, on the goroutine that
// calls Wait, the first fault or panic any of them raised.
type Group struct {
	wg     sync.WaitGroup
	mu     sync.Mutex
	raised any
}

// Go runs fn on a new goroutine.
func (g *Group) Go(fn func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if p := Catch(fn); p != nil {
			g.mu.Lock()
			if g.raised == nil {
				g.raised = p
			}
			g.mu.Unlock()
		}
	}()
}

// Raised returns what a finished goroutine raised so far (nil if nothing),
// for workers that want to stop early.
func (g *Group) Raised() any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.raised
}

// Wait waits for every goroutine and re-panics with the first fault or
// panic one of them raised.
func (g *Group) Wait() {
	g.wg.Wait()
	if g.raised != nil {
		panic(g.raised)
	}
}
