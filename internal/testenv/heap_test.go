package testenv

import (
	"runtime"
	"testing"
	"time"
)

// TestPeakHeap: PeakHeap sees a 64 MiB buffer held while f runs (and freed
// before it returns), and reports well under that for an f that allocates
// nothing.
func TestPeakHeap(t *testing.T) {
	const big = 64 << 20
	for _, tc := range []struct {
		name     string
		alloc    int
		min, max uint64
	}{
		{"holds 64 MiB", big, big, 1 << 40},
		{"allocates nothing", 0, 0, big / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PeakHeap(t, func() {
				buf := make([]byte, tc.alloc)
				for i := range buf {
					buf[i] = byte(i)
				}
				time.Sleep(20 * time.Millisecond) // several samples while it is held
				runtime.KeepAlive(buf)
			})
			t.Logf("peak heap %d KiB", got>>10)
			if got < tc.min || got > tc.max {
				t.Errorf("peak heap %d bytes, want in [%d, %d]", got, tc.min, tc.max)
			}
		})
	}
}
