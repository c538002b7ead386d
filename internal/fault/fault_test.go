package fault

import (
	"errors"
	"testing"
)

func TestFailurePassesThrough(t *testing.T) {
	want := errors.New("tensor x: truncated")
	tests := []struct {
		name string
		fn   func()
		fail bool // a *Failure carrying want, else a *PanicError
	}{
		{"Fail", func() { Fail(want) }, true},
		{"plain panic", func() { panic("bug") }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g Group
			g.Go(tc.fn)
			raised := Catch(g.Wait)
			f, ok := raised.(*Failure)
			if ok != tc.fail {
				t.Fatalf("raised %T %v, want a Failure: %v", raised, raised, tc.fail)
			}
			if ok && !errors.Is(f, want) {
				t.Fatalf("Failure carries %v, want %v", f.Err, want)
			}
			if !ok {
				if _, isPanic := raised.(*PanicError); !isPanic {
					t.Fatalf("raised %T, want *PanicError", raised)
				}
			}
		})
	}
}
