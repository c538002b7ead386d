// Copyright ©2025 The wtool Authors.

package linalg

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestParallelFor checks that every task runs exactly once, with concurrent
// and nested callers, and after the workers have gone to sleep.
func TestParallelFor(t *testing.T) {
	withProcs(4, func() {
		for _, n := range []int{0, 1, 2, 3, 7, 64} {
			counts := make([]atomic.Int32, n)
			parallelFor(n, func(i int) { counts[i].Add(1) })
			for i := range counts {
				if c := counts[i].Load(); c != 1 {
					t.Errorf("n=%d: task %d ran %d times", n, i, c)
				}
			}
		}

		// Concurrent callers, each with nested jobs.
		var wg sync.WaitGroup
		var total atomic.Int64
		for range 5 {
			wg.Go(func() {
				for range 20 {
					parallelFor(3, func(int) {
						parallelFor(4, func(int) { total.Add(1) })
					})
				}
			})
		}
		wg.Wait()
		if got, want := total.Load(), int64(5*20*3*4); got != want {
			t.Errorf("nested concurrent jobs ran %d tasks, want %d", got, want)
		}

		// Let the workers block, then post again.
		time.Sleep(5 * spinTime)
		var after atomic.Int32
		parallelFor(4, func(int) { after.Add(1) })
		if after.Load() != 4 {
			t.Errorf("after idling: %d tasks ran, want 4", after.Load())
		}
	})
}
