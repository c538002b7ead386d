package merge

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
)

// Sparsification of task vectors: a sparsifier prepares, per tensor, with
// whatever streaming passes it needs over the models and the base, a
// trimmer that writes each model's trimmed, rescaled and weighted deltas
// block by block. TIES (by magnitude, sparsify_magnitude.go) and DARE (at
// random, sparsify_random.go) are the built-in ones; mergekit's
// breadcrumbs (magnitude with the largest outliers dropped too: two
// selections) and DELLA (per-row magnitude ranks setting keep
// probabilities) fit the same interface: a file each.
type sparsifier interface {
	// prepare runs the passes of one tensor: ins are the models' tensors
	// then the base's (last); densities are per model (for a method's own
	// sparsifier: per model, the density then the method's per-model
	// numbers, e.g. density_0, gamma_0, density_1, gamma_1, ...).
	prepare(ctx context.Context, t *TensorJob, ins []*Input, densities []float64) (trimmer, error)
}

// trimmer writes model i's weighted deltas of one block, for elements lo,
// lo+1, ...: d[k] = trimmed(x[k] - b[k]) * w. It returns false when the
// model is not sparsified (the caller writes (x - b) * w).
type trimmer interface {
	trim(i int, d, x, b []float64, lo int, w float64) bool
}

// builtinSparsifier returns the sparsifier of the options.
func builtinSparsifier(o TaskVectorOptions) sparsifier {
	if o.sparsifier != nil {
		return o.sparsifier
	}
	switch o.Sparsify {
	case Magnitude:
		return magnitudeSparsifier{}
	case Random:
		return randomSparsifier{seed: o.Seed, rescale: o.Rescale}
	}
	return nil
}

// checkDensity validates a density: in [0, 1], or (0, 1] when zero makes
// no sense (DARE divides by it).
func checkDensity(d float64, zeroOK bool, what string) error {
	if math.IsNaN(d) || d < 0 || d > 1 || (!zeroOK && d == 0) {
		if zeroOK {
			return fmt.Errorf("%s density %g must be in [0, 1]", what, d)
		}
		return fmt.Errorf("%s density %g must be in (0, 1]", what, d)
	}
	return nil
}

// keepRecorder is a trimmer whose keep decisions the L1 pass can record, one
// bit per element and model, for the merge pass to replay instead of
// deciding again (DELLA: ranks and draws computed once, not twice).
type keepRecorder interface {
	// recordBytes is the memory recording takes.
	recordBytes() int64
	// record makes the next trims record their decisions (false: it could
	// not, they decide as before).
	record() bool
	// replay makes the next trims replay the recorded decisions.
	replay()
	// release frees the recorded decisions; no trim may follow.
	release()
	// recordBlock records model i's decisions of a block (elements lo,
	// lo+1, ... of x and b) without trimming, and returns the recorded
	// bits (element e kept: bit e set); false when it does not record
	// them (not recording, or model i not sparsified by keep decisions):
	// the caller trims.
	// An error is one of reading the inputs (values beyond the block).
	recordBlock(i int, x, b []float64, lo int) (bits []uint64, ok bool, err error)
}

// inputChecker is a trimmer whose trims read values beyond their block
// (DELLA's rows): checkInputs decodes every value of the inputs once, so
// that a non-finite one is an error before the trims, which cannot return
// errors, run. The L1 pass skips it when it records decisions (its
// recordBlock returns the errors).
type inputChecker interface {
	checkInputs(ctx context.Context, t *TensorJob) error
}

// scaledTrimmer is a trimmer that can multiply its output by s > 0 in the
// same loop: trimScaled gives trim's d times s, bit for bit.
type scaledTrimmer interface {
	trimScaled(i int, d, x, b []float64, lo int, w, s float64) bool
}

// reserveKeep reserves n bytes of recorded keep decisions within the job's
// share for them (a sixteenth of its memory budget), across the tensors in
// flight; false when they do not fit (the trimmer then decides again).
func (j *Job) reserveKeep(n int64) bool {
	limit := j.MaxMemory
	if limit <= 0 {
		limit = checkpoint.DefaultMaxMemory()
	}
	limit /= 16
	for {
		cur := j.keepBytes.Load()
		if cur+n > limit {
			return false
		}
		if j.keepBytes.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// l1Trim scales each sparsified task vector so that it keeps its L1 norm
// (mergekit's rescale: true): scale[i] = L1(x_i - b) / L1(trimmed), 0
// (no scaling) when either is below 1e-7, as in mergekit.
type l1Trim struct {
	inner trimmer
	scale []float64
	done  func() // releases recorded decisions (nil: none)
}

// l1Rescaled measures, in one pass, each model's L1 norm before and after
// the trimmer and returns the trimmer followed by the rescaling.
func l1Rescaled(ctx context.Context, t *TensorJob, ins []*Input, inner trimmer) (*l1Trim, error) {
	n := len(ins) - 1
	tr := &l1Trim{inner: inner, scale: make([]float64, n)}
	rec, _ := inner.(keepRecorder)
	if rec != nil && t.Job != nil {
		if need := rec.recordBytes(); need > 0 && t.Job.reserveKeep(need) {
			if rec.record() {
				tr.done = func() { rec.release(); t.Job.keepBytes.Add(-need) }
			} else {
				t.Job.keepBytes.Add(-need)
			}
		}
	}
	if ic, ok := inner.(inputChecker); ok && tr.done == nil {
		if err := ic.checkInputs(ctx, t); err != nil {
			return nil, err
		}
	}
	bufs := sync.Pool{New: func() any { b := make([]float64, BlockSize); return &b }}
	sums, err := t.Sums(ctx, ins, 2*n, func(lo int, in [][]float64, acc []float64) error {
		bp := bufs.Get().(*[]float64)
		defer bufs.Put(bp)
		b := in[n]
		for i := range n {
			// recording: only the sums of the kept deltas are needed
			if tr.done != nil && lo%8 == 0 {
				bits, ok, err := rec.recordBlock(i, in[i][:len(b)], b, lo)
				if err != nil {
					return err
				}
				if ok {
					acc[2*i], acc[2*i+1] = absSumsMasked(in[i][:len(b)], b, bits, lo)
					continue
				}
			}
			d := (*bp)[:len(b)]
			if !inner.trim(i, d, in[i], b, lo, 1) {
				continue
			}
			acc[2*i], acc[2*i+1] = absSums(in[i], b, d)
		}
		return nil
	})
	if err != nil {
		if tr.done != nil {
			tr.done()
		}
		return nil, err
	}
	if tr.done != nil {
		rec.replay()
	}
	for i := range n {
		if before, after := sums[2*i], sums[2*i+1]; before >= 1e-7 && after >= 1e-7 {
			tr.scale[i] = before / after
		}
	}
	return tr, nil
}

func (tr *l1Trim) trim(i int, d, x, b []float64, lo int, w float64) bool {
	if st, ok := tr.inner.(scaledTrimmer); ok && tr.scale[i] != 0 {
		return st.trimScaled(i, d, x, b, lo, w, tr.scale[i])
	}
	if !tr.inner.trim(i, d, x, b, lo, w) {
		return false
	}
	if s := tr.scale[i]; s != 0 {
		scaleBy(d, s)
	}
	return true
}
