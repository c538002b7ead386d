package main

import (
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// byteProgress returns a progress callback drawing a byte-count bar on stderr,
// and a function to finish it. Without a terminal, or with --quiet, both do
// nothing.
func (g *globals) byteProgress(description string) (update func(done, total int64), finish func()) {
	if g.quiet || !g.stderrIsTerminal() {
		return func(int64, int64) {}, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update = func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription(description),
				progressbar.OptionShowBytes(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionShowCount(),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set64(done)
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

// countProgress is byteProgress for counts of items (samples, tensors).
func (g *globals) countProgress(description string) (update func(done, total int), finish func()) {
	if g.quiet || !g.stderrIsTerminal() {
		return func(int, int) {}, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	update = func(done, total int) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			bar = progressbar.NewOptions(total,
				progressbar.OptionSetWriter(g.stderr),
				progressbar.OptionSetDescription(description),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionShowCount(),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Set(done)
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
