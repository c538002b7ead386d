package nn

import (
	"context"
	"fmt"
	"slices"

	"github.com/wtool/wtool/fisher/stats"
)

// LazyStats are statistics computed by CollectLazyStats: a stats.Lookup
// whose largest entries are kept as the rows recorded for them and
// accumulated when asked for. Consumers that read one module at a time
// (activation matching, PLeaS) then never hold every large Gram matrix at
// once: a ResNet-18's deep convolutions have 4608 input features (510 MB of
// joint float64 statistics each) but, at 64x64 pixels, 4 rows per image.
type LazyStats struct {
	joint    bool
	source   string
	samples  int64
	order    []string
	resident map[string]*stats.Module
	kept     map[string]*keptRows
	released map[string]bool
	// the deferred module accumulated last, and the arrays of those before
	cur     *stats.Module
	free    [][]float64
	scratch []float32
}

// DefaultDeferBytes is CollectLazyStats's default threshold: entries whose
// float64 statistics would exceed 256 MiB are deferred.
const DefaultDeferBytes = 256 << 20

// CollectLazyStats is CollectStats for consumers that read one module at a
// time: every entry whose float64 statistics would take more than
// deferBytes (0: DefaultDeferBytes; negative: none) keeps the blocks of
// rows recorded for it, as long as they are smaller than its statistics,
// and Module accumulates them on demand. The statistics are the same
// (bit for bit) as CollectStats's: the same blocks, multiplied in the same
// order.
func CollectLazyStats(ctx context.Context, nets []*Net, d *Data, opts StatsOptions, deferBytes int64) (*LazyStats, error) {
	if deferBytes == 0 {
		deferBytes = DefaultDeferBytes
	}
	if deferBytes < 0 {
		deferBytes = 0
	}
	rec, err := collect(ctx, nets, d, opts, deferBytes)
	if err != nil {
		return nil, err
	}
	s := rec.acc.Stats(opts.Source)
	l := &LazyStats{joint: rec.lanes == 2, source: opts.Source, samples: s.Samples, order: rec.order,
		resident: map[string]*stats.Module{}, kept: map[string]*keptRows{}, released: map[string]bool{}}
	for _, m := range s.Modules {
		l.resident[m.Name] = m
	}
	for name, k := range rec.deferred {
		if k.rows == 0 {
			return nil, fmt.Errorf("%q never ran on the data", name)
		}
		if k.acc != nil { // its rows outgrew its statistics
			l.resident[name] = k.acc.Stats(opts.Source).Modules[0]
			continue
		}
		l.kept[name] = k
	}
	for _, name := range l.order {
		if m := l.resident[name]; m != nil && m.Count == 0 {
			return nil, fmt.Errorf("%q never ran on the data", name)
		}
	}
	return l, nil
}

// Samples is the number of calibration samples run.
func (l *LazyStats) Samples() int64 { return l.samples }

// Names returns the entries in the nets' point order.
func (l *LazyStats) Names() []string { return slices.Clone(l.order) }

// Deferred returns the entries accumulated on demand.
func (l *LazyStats) Deferred() []string {
	var out []string
	for _, n := range l.order {
		if l.kept[n] != nil {
			out = append(out, n)
		}
	}
	return out
}

// Has reports whether an entry was recorded (and not released).
func (l *LazyStats) Has(name string) bool {
	if l.released[name] {
		return false
	}
	return l.resident[name] != nil || l.kept[name] != nil
}

// Count returns an entry's number of rows without accumulating it.
func (l *LazyStats) Count(name string) (int64, error) {
	if m := l.resident[name]; m != nil {
		return m.Count, nil
	}
	if k := l.kept[name]; k != nil {
		return k.rows, nil
	}
	return 0, fmt.Errorf("no statistics for module %q", name)
}

// Module returns an entry's statistics. A deferred entry is accumulated
// from its rows into the arrays of the deferred entry returned before,
// which must no longer be used: read deferred entries one at a time.
func (l *LazyStats) Module(name string) (*stats.Module, error) {
	if l.released[name] {
		return nil, fmt.Errorf("the statistics of %q were released", name)
	}
	if m := l.resident[name]; m != nil {
		return m, nil
	}
	k := l.kept[name]
	if k == nil {
		return nil, fmt.Errorf("no statistics for module %q", name)
	}
	if l.cur != nil && l.cur.Name == name {
		return l.cur, nil
	}
	l.recycle()
	a, err := k.replay(name, l.joint, l.alloc, &l.scratch)
	if err != nil {
		return nil, err
	}
	l.cur = a.Stats(l.source).Modules[0]
	return l.cur, nil
}

// Release drops an entry's statistics (and its kept rows): consumers that
// are done with a module hand its memory back.
func (l *LazyStats) Release(name string) {
	l.released[name] = true
	delete(l.resident, name)
	delete(l.kept, name)
	if l.cur != nil && l.cur.Name == name {
		l.recycle()
	}
	if len(l.kept) == 0 {
		l.free, l.scratch = nil, nil
	}
}

// recycle hands the current deferred module's arrays to the next one.
func (l *LazyStats) recycle() {
	if m := l.cur; m != nil {
		for _, v := range [][]float64{m.Sum, m.Abs, m.Gram, m.SumB, m.AbsB, m.GramB, m.Cross} {
			if v != nil {
				l.free = append(l.free, v)
			}
		}
		l.cur = nil
	}
}

// alloc returns n zeroed values: the smallest free array that holds them,
// or a new one.
func (l *LazyStats) alloc(n int) []float64 {
	best := -1
	for i, v := range l.free {
		if cap(v) >= n && (best < 0 || cap(v) < cap(l.free[best])) {
			best = i
		}
	}
	if best < 0 {
		return make([]float64, n)
	}
	v := l.free[best][:n]
	l.free = slices.Delete(l.free, best, best+1)
	clear(v)
	return v
}
