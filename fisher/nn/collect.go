package nn

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
)

// DefaultMaxGramElems is the default limit on one entry's Gram matrix
// (2^26 float64 values, 512 MiB), as tools/wtool_collect.py's.
const DefaultMaxGramElems = 1 << 26

// StatsOptions control CollectStats.
type StatsOptions struct {
	// BatchSize is the number of samples (images or sequences) per batch
	// (default 64 images, 8 sequences); it does not change the result.
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
	rec := &recorder{want: map[string]int{}, perms: map[string][]int{}, joint: joint}
	for _, pt := range nets[0].Points() {
		if opts.Select != nil && !opts.Select(pt) {
			continue
		}
		if limit > 0 && pt.Dim*pt.Dim > limit {
			return nil, fmt.Errorf("%s %q: %d features give a Gram matrix of %d elements (%d MiB in float64), above the limit of %d; leave it out or raise the limit",
				pt.Kind, pt.Name, pt.Dim, pt.Dim*pt.Dim, pt.Dim*pt.Dim*8>>20, limit)
		}
		names = append(names, pt.Name)
		dims = append(dims, pt.Dim)
		rec.want[pt.Name] = pt.Dim
		if pt.Kind == ModuleInput {
			if m, ok := nets[0].Arch.Module(pt.Module); ok && m.Kind == arch.Conv && len(m.Kernel) == 2 && m.Kernel[0]*m.Kernel[1] > 1 {
				rec.perms[pt.Name] = patchPerm(m.InFeatures/(m.Kernel[0]*m.Kernel[1]), m.Kernel[0], m.Kernel[1])
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no statistics selected")
	}
	if rec.acc, err = stats.NewAccumulator(names, dims, joint); err != nil {
		return nil, err
	}
	p.rec = rec
	bs := opts.BatchSize
	if bs <= 0 {
		bs = 64
		if d.Tokens {
			bs = 8
		}
	}
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
	s := rec.acc.Stats(opts.Source)
	for _, m := range s.Modules {
		if m.Count == 0 {
			return nil, fmt.Errorf("%q never ran on the data", m.Name)
		}
		if perm, ok := rec.perms[m.Name]; ok {
			permuteModule(m, perm)
		}
	}
	return s, nil
}

// recorder feeds a pass's activations to a statistics accumulator.
type recorder struct {
	acc   *stats.Accumulator
	want  map[string]int // name -> dimension
	perms map[string][]int
	joint bool
}

func (r *recorder) wants(name string) bool { _, ok := r.want[name]; return ok }

// gramChunk bounds the rows of one float32 Gram product before it is
// added to the float64 sums.
const gramChunk = 2048

func (r *recorder) add(name string, vs [][]float32, rows, dim int) error {
	if want := r.want[name]; want != dim {
		return fmt.Errorf("%q: %d features, expected %d", name, dim, want)
	}
	for lo := 0; lo < rows; lo += gramChunk {
		hi := min(lo+gramChunk, rows)
		var err error
		if r.joint {
			err = r.acc.AddJoint(name, vs[0][lo*dim:hi*dim], vs[1][lo*dim:hi*dim], hi-lo)
		} else {
			err = r.acc.Add(name, vs[0][lo*dim:hi*dim], hi-lo)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// permuteModule reorders an entry's features: feature f becomes the
// accumulated feature perm[f].
func permuteModule(m *stats.Module, perm []int) {
	d := m.Dim
	vec := func(v []float64) []float64 {
		if v == nil {
			return nil
		}
		out := make([]float64, d)
		for f, g := range perm {
			out[f] = v[g]
		}
		return out
	}
	mat := func(v []float64) []float64 {
		if v == nil {
			return nil
		}
		out := make([]float64, d*d)
		for f, g := range perm {
			for f2, g2 := range perm {
				out[f*d+f2] = v[g*d+g2]
			}
		}
		return out
	}
	m.Sum, m.Abs, m.Gram = vec(m.Sum), vec(m.Abs), mat(m.Gram)
	m.SumB, m.AbsB, m.GramB, m.Cross = vec(m.SumB), vec(m.AbsB), mat(m.GramB), mat(m.Cross)
}
