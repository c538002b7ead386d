package nn

import (
	"context"
	"fmt"
	"slices"

	"github.com/wtool/wtool/fisher/stats"
)

// DefaultMaxGramElems is the default limit on one entry's Gram matrix
// (2^26 float64 values, 512 MiB), as tools/wtool_collect.py's.
const DefaultMaxGramElems = 1 << 26

// StatsOptions control CollectStats.
type StatsOptions struct {
	// BatchSize is the number of samples (images or sequences) per batch
	// (default 64 images, at most 8 sequences, fewer when their logits
	// would exceed 256 MiB); it changes the result only by float32 rounding.
	BatchSize int
	// Limit caps the number of samples (0: all).
	Limit int
	// Select chooses the entries to record (nil: every module input and
	// every activation point, Net.Points).
	Select func(Point) bool
	// MaxGramElems refuses entries whose Gram matrix would have more
	// elements (default DefaultMaxGramElems; negative: no limit).
	MaxGramElems int
	// Progress, if set, is called after each batch with samples done and total.
	Progress func(done, total int)
	// Source is recorded in the file's metadata.
	Source string
}

// Modules selects module inputs only (the entries of files written before
// activation points existed).
func Modules(p Point) bool { return p.Kind == ModuleInput }

// CollectStats runs the data through one network, giving single-model
// statistics, or through two networks of the same architecture on the same
// samples, giving joint statistics (docs/stats.md): for every selected
// module input and activation point, the sample count, sums, sums of
// absolute values and Gram matrices (and the cross Gram of the two models).
// Samples are the rows of what the point carries: one per image for a
// Linear head, one per output position per image for a convolution's patch
// and for a feature map's channels, one per token for a transformer.
func CollectStats(ctx context.Context, nets []*Net, d *Data, opts StatsOptions) (*stats.Stats, error) {
	rec, err := collect(ctx, nets, d, opts, 0)
	if err != nil {
		return nil, err
	}
	s := rec.acc.Stats(opts.Source)
	for _, m := range s.Modules {
		if m.Count == 0 {
			return nil, fmt.Errorf("%q never ran on the data", m.Name)
		}
	}
	return s, nil
}

// collect runs the data through the nets into a recorder; entries whose
// float64 statistics would take more than deferBytes (0: none) keep their
// rows instead (see CollectLazyStats).
func collect(ctx context.Context, nets []*Net, d *Data, opts StatsOptions, deferBytes int64) (*recorder, error) {
	if len(nets) < 1 || len(nets) > 2 {
		return nil, fmt.Errorf("statistics are for one model or a pair, not %d", len(nets))
	}
	p, err := newPass(ctx, nets)
	if err != nil {
		return nil, err
	}
	var b batch
	if err := prepare(nets[0], d, &b); err != nil {
		return nil, err
	}
	joint := len(nets) == 2
	limit := opts.MaxGramElems
	if limit == 0 {
		limit = DefaultMaxGramElems
	}
	var names []string
	var dims []int
	rec := &recorder{want: map[string]int{}, lanes: len(nets), bufs: map[string]*rowBuf{}, deferred: map[string]*keptRows{}}
	for _, pt := range nets[0].Points() {
		if opts.Select != nil && !opts.Select(pt) {
			continue
		}
		if limit > 0 && pt.Dim*pt.Dim > limit {
			return nil, fmt.Errorf("%s %q: %d features give a Gram matrix of %d elements (%d MiB in float64), above the limit of %d; leave it out or raise the limit",
				pt.Kind, pt.Name, pt.Dim, pt.Dim*pt.Dim, pt.Dim*pt.Dim*8>>20, limit)
		}
		rec.want[pt.Name] = pt.Dim
		rec.order = append(rec.order, pt.Name)
		if deferBytes > 0 && statsBytes(pt.Dim, joint) > deferBytes {
			rec.deferred[pt.Name] = &keptRows{dim: pt.Dim}
			continue
		}
		names = append(names, pt.Name)
		dims = append(dims, pt.Dim)
	}
	if len(rec.order) == 0 {
		return nil, fmt.Errorf("no statistics selected")
	}
	if rec.acc, err = stats.NewAccumulator(names, dims, joint); err != nil {
		return nil, err
	}
	p.rec = rec
	bs := defaultBatch(nets[0], d, opts.BatchSize, 64)
	total := d.N
	if opts.Limit > 0 {
		total = min(total, opts.Limit)
	}
	for lo := 0; lo < total; lo += bs {
		if err := p.check(); err != nil {
			return nil, err
		}
		hi := min(lo+bs, total)
		if err := d.read(&b, lo, hi); err != nil {
			return nil, err
		}
		if _, err := p.run(&b); err != nil {
			return nil, fmt.Errorf("batch at sample %d: %w", lo, err)
		}
		rec.acc.AddSamples(hi - lo)
		if opts.Progress != nil {
			opts.Progress(hi, total)
		}
	}
	if err := rec.flushAll(); err != nil {
		return nil, err
	}
	rec.bufs = nil
	return rec, nil
}

// recorder feeds a pass's activations to a statistics accumulator. Rows
// are gathered per entry until a block of them (up to 2048, fewer for wide
// entries) is multiplied at once: deep layers give few rows per batch, and
// a Gram update costs the same memory traffic whatever its row count.
type recorder struct {
	acc   *stats.Accumulator
	want  map[string]int // name -> dimension
	lanes int
	bufs  map[string]*rowBuf
	used  []string // entries with buffered rows, in first-use order
	order []string // every entry, in the nets' point order
	// deferred entries keep their blocks of rows (CollectLazyStats)
	deferred map[string]*keptRows
	scratch  []float32 // the float32 products of the deferred entries that accumulate
}

// keptRows are a deferred entry's blocks of rows, exactly as they would
// have been multiplied, or (when they came to outweigh the statistics) the
// entry's own accumulator.
type keptRows struct {
	dim    int
	blocks []rowBlock
	bytes  int64
	rows   int64
	acc    *stats.Accumulator
}

type rowBlock struct {
	x    [][]float32 // one per lane
	rows int
}

// statsBytes is the size of an entry's float64 statistics.
func statsBytes(dim int, joint bool) int64 {
	d := int64(dim)
	if joint {
		return 8 * (3*d*d + 4*d)
	}
	return 8 * (d*d + 2*d)
}

// rowBuf holds an entry's pending rows, one slice per lane.
type rowBuf struct {
	dim, rows, cap int
	x              [][]float32
}

func (r *recorder) wants(name string) bool { _, ok := r.want[name]; return ok }

// gramChunk bounds the rows of one float32 Gram product before it is
// added to the float64 sums; bufBytes bounds one lane's pending rows of an
// entry.
const (
	gramChunk = 2048
	bufBytes  = 16 << 20
)

func (r *recorder) add(name string, vs [][]float32, rows, dim int) error {
	if want := r.want[name]; want != dim {
		return fmt.Errorf("%q: %d features, expected %d", name, dim, want)
	}
	b := r.bufs[name]
	if b == nil {
		c := min(gramChunk, max(256, bufBytes/4/dim))
		// the lanes' buffers are allocated on first use: an entry whose
		// batches bring whole blocks (early convolutions) never needs them
		b = &rowBuf{dim: dim, cap: c, x: make([][]float32, r.lanes)}
		r.bufs[name] = b
		r.used = append(r.used, name)
	}
	for lo := 0; lo < rows; {
		if b.rows == 0 && rows-lo >= b.cap { // a whole block: no copy
			hi := lo + b.cap
			if err := r.send(name, vs, lo, hi, dim); err != nil {
				return err
			}
			lo = hi
			continue
		}
		n := min(rows-lo, b.cap-b.rows)
		for i := range vs {
			if b.x[i] == nil {
				b.x[i] = make([]float32, b.cap*dim)
			}
			copy(b.x[i][b.rows*dim:], vs[i][lo*dim:(lo+n)*dim])
		}
		b.rows += n
		lo += n
		if b.rows == b.cap {
			if err := r.flush(name, b); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *recorder) send(name string, vs [][]float32, lo, hi, dim int) error {
	acc := r.acc
	if k := r.deferred[name]; k != nil {
		if k.acc == nil {
			b := rowBlock{rows: hi - lo, x: make([][]float32, len(vs))}
			for i, v := range vs {
				b.x[i] = slices.Clone(v[lo*dim : hi*dim])
			}
			k.blocks = append(k.blocks, b)
			k.bytes += int64(len(vs)*(hi-lo)*dim) * 4
			k.rows += int64(hi - lo)
			if k.bytes <= statsBytes(dim, r.lanes == 2) {
				return nil
			}
			// the rows outweigh the statistics: accumulate them from now on
			a, err := k.replay(name, r.lanes == 2, nil, &r.scratch)
			if err != nil {
				return err
			}
			k.acc, k.blocks, k.bytes = a, nil, 0
			return nil
		}
		acc = k.acc
		k.rows += int64(hi - lo)
	}
	if r.lanes == 2 {
		return acc.AddJoint(name, vs[0][lo*dim:hi*dim], vs[1][lo*dim:hi*dim], hi-lo)
	}
	return acc.Add(name, vs[0][lo*dim:hi*dim], hi-lo)
}

// replay accumulates a deferred entry's kept blocks, in the order they
// came, into a new accumulator: the statistics the recorder would have
// accumulated.
func (k *keptRows) replay(name string, joint bool, alloc func(int) []float64, scratch *[]float32) (*stats.Accumulator, error) {
	a, err := stats.NewAccumulatorWith([]string{name}, []int{k.dim}, joint, alloc, scratch)
	if err != nil {
		return nil, err
	}
	for _, b := range k.blocks {
		if joint {
			err = a.AddJoint(name, b.x[0], b.x[1], b.rows)
		} else {
			err = a.Add(name, b.x[0], b.rows)
		}
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (r *recorder) flush(name string, b *rowBuf) error {
	if b.rows == 0 {
		return nil
	}
	err := r.send(name, b.x, 0, b.rows, b.dim)
	b.rows = 0
	return err
}

// flushAll multiplies every entry's pending rows.
func (r *recorder) flushAll() error {
	for _, name := range r.used {
		if err := r.flush(name, r.bufs[name]); err != nil {
			return err
		}
	}
	return nil
}
