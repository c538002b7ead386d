package main

import (
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress returns a progress callback drawing a bar on stderr, and a
// function to finish it. Without a terminal, or with --quiet, both do
// nothing. bytes selects byte units for the counts.
func progress[N int | int64](g *globals, description string, bytes bool) (update func(done, total N), finish func()) {
	if g.quiet || !g.stderrIsTerminal() {
		return func(N, N) {}, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update = func(done, total N) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions64(int64(total),
				progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription(description),
				progressbar.OptionShowBytes(bytes),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionShowCount(),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set64(int64(done))
	}
	finish = func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			bar.Finish()
		}
	}
	return update, finish
}

// byteProgress is a progress bar counting bytes.
func (g *globals) byteProgress(description string) (func(done, total int64), func()) {
	return progress[int64](g, description, true)
}

// countProgress is a progress bar counting items (samples, tensors).
func (g *globals) countProgress(description string) (func(done, total int), func()) {
	return progress[int](g, description, false)
}
