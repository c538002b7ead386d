package merge

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/wtool/wtool/internal/fault"
)

// dellaSparsifier is DELLA's MagPrune (Deep et al., 2024) as mergekit
// computes it: within each row of a task vector (the fibers along axis 1;
// a 1-D tensor is one row) the entries are ranked by magnitude, smallest
// first, and the entry of rank r of n is kept with probability
// p = density - epsilon + 2 epsilon r / (n - 1) (density for a row of
// one), so large entries survive more often; kept entries are divided by p
// (rescale: inverse) or the task vector rescaled to its L1 norm (l1,
// mergekit's default; a separate pass). The draws are counter-based, keyed
// like DARE's (seed, tensor name, the model's values), so the result does
// not depend on the order of the models or on chunking.
//
// Memory: ranks are computed row by row where the merge needs them, in a
// per-goroutine cache of one row per model (row length x 40 bytes), never
// for the whole tensor. A row's ranks come from one stable argsort of its
// magnitudes (an LSD radix sort on their float64 bits, skipping the bytes
// all entries share), so ties rank by index.
type dellaSparsifier struct {
	seed    uint64
	inverse bool
}

type dellaTrim struct {
	ins    []*Input // models, then the base
	keys   []uint64
	dens   []float64
	eps    []float64
	sparse []bool
	rows   fibers
	cache  sync.Pool
	inv    bool
}

// fibers are the rows of a tensor along one axis: row r has the elements
// start(r) + j*stride for j < length.
type fibers struct {
	length, stride, inner int
}

// dellaRows returns the fibers along axis 1 (the whole tensor for 1-D).
func dellaRows(shape []int64, n int) fibers {
	if len(shape) < 2 {
		return fibers{length: n, stride: 1, inner: 1}
	}
	inner := 1
	for _, s := range shape[2:] {
		inner *= int(s)
	}
	return fibers{length: int(shape[1]), stride: inner, inner: inner}
}

// of returns the row of element e and e's position in it.
func (f fibers) of(e int) (row, pos int) {
	o := e / (f.length * f.inner)
	r := e % f.inner
	pos = (e / f.inner) % f.length
	return o*f.inner + r, pos
}

// start returns the first element of a row.
func (f fibers) start(row int) int {
	o, r := row/f.inner, row%f.inner
	return o*f.length*f.inner + r
}

// decode reads a row of an input into dst (length elements).
func (f fibers) decode(in *Input, row int, dst []float64) error {
	s := f.start(row)
	if f.stride == 1 {
		return in.Decode(dst, s)
	}
	for j := range dst {
		if err := in.Decode(dst[j:j+1], s+j*f.stride); err != nil {
			return err
		}
	}
	return nil
}

// dellaRow is one row's keep probabilities of one model.
type dellaRow struct {
	model, row int
	x, b       []float64
	keys       []uint64
	idx, tmp   []int32 // the argsort and its scratch
	hist       *[256]int32
	p          []float64 // by position in the row
	err        error
}

// dellaRows caches one row per model (a block's trims alternate models).
type dellaRowCache []*dellaRow

func (s dellaSparsifier) prepare(ctx context.Context, t *TensorJob, ins []*Input, params []float64) (trimmer, error) {
	n := len(ins) - 1
	tr := &dellaTrim{ins: ins, keys: make([]uint64, n), dens: make([]float64, n), eps: make([]float64, n),
		sparse: make([]bool, n), rows: dellaRows(t.Shape, t.N), inv: s.inverse}
	tr.cache.New = func() any {
		c := make(dellaRowCache, n)
		for i := range c {
			c[i] = &dellaRow{model: -1}
		}
		return &c
	}
	var hashed []*Input
	var which []int
	for i := range n {
		d, eps := params[2*i], params[2*i+1]
		if err := checkDensity(min(d, 1), true, "DELLA"); err != nil {
			return nil, err
		}
		if d >= 1 {
			continue
		}
		if d > 0 && (d+eps >= 1 || d-eps <= 0) {
			return nil, fmt.Errorf("DELLA: density - epsilon and density + epsilon must lie in (0, 1): density %g, epsilon %g", d, eps)
		}
		tr.sparse[i], tr.dens[i], tr.eps[i] = true, d, eps
		if d > 0 {
			hashed = append(hashed, ins[i])
			which = append(which, i)
		}
	}
	if len(which) > 0 {
		// the base is read too: the rows the kernel reads beyond its block
		// were all decoded once, so a non-finite value is reported here
		hs, err := valuesHashes(ctx, t, append(hashed, ins[n]))
		if err != nil {
			return nil, err
		}
		for k, i := range which {
			tr.keys[i] = MaskKey(s.seed, t.Name, hs[k])
		}
	}
	return tr, nil
}

// row returns model i's keep probabilities of a row, from c when it holds
// them.
func (tr *dellaTrim) row(c *dellaRow, i, row int) error {
	if c.model == i && c.row == row {
		return c.err
	}
	m := tr.rows.length
	if cap(c.x) < m {
		c.x, c.b, c.p, c.keys = make([]float64, m), make([]float64, m), make([]float64, m), make([]uint64, m)
		c.idx, c.tmp = make([]int32, m), make([]int32, m)
	}
	if c.hist == nil {
		c.hist = new([256]int32)
	}
	c.x, c.b, c.keys, c.idx, c.tmp, c.p = c.x[:m], c.b[:m], c.keys[:m], c.idx[:m], c.tmp[:m], c.p[:m]
	c.model, c.row, c.err = i, row, nil
	if err := tr.rows.decode(tr.ins[i], row, c.x); err != nil {
		c.err = err
		return err
	}
	if err := tr.rows.decode(tr.ins[len(tr.ins)-1], row, c.b); err != nil {
		c.err = err
		return err
	}
	for j := range c.x {
		c.keys[j] = math.Float64bits(math.Abs(c.x[j] - c.b[j]))
	}
	// the rank of entry j: its position in the stable argsort of the keys
	// (the keys below its own, plus the equal keys at smaller indices)
	order := argsortStable(c.keys, c.idx, c.tmp, c.hist)
	d, eps := tr.dens[i], tr.eps[i]
	for rank, j := range order {
		p := d
		if m > 1 {
			p = d - eps + 2*eps*float64(rank)/float64(m-1)
		}
		c.p[j] = p
	}
	return nil
}

// argsortStable returns the indices of keys in ascending order of key, equal
// keys by index: an LSD radix sort, one byte per pass, skipping the bytes
// every key shares. idx and tmp (len(keys) each) are its buffers; the result
// is one of them.
func argsortStable(keys []uint64, idx, tmp []int32, hist *[256]int32) []int32 {
	for j := range idx {
		idx[j] = int32(j)
	}
	if len(keys) < 2 {
		return idx
	}
	or, and := uint64(0), ^uint64(0)
	for _, k := range keys {
		or |= k
		and &= k
	}
	varying := or ^ and // the bits that differ between some keys
	src, dst := idx, tmp
	for d := range 8 {
		sh := uint(8 * d)
		if byte(varying>>sh) == 0 {
			continue // every key has this byte
		}
		h := hist
		*h = [256]int32{}
		for _, k := range keys {
			h[byte(k>>sh)]++
		}
		var sum int32
		for b, c := range h {
			h[b] = sum
			sum += c
		}
		for _, j := range src {
			b := byte(keys[j] >> sh)
			dst[h[b]] = j
			h[b]++
		}
		src, dst = dst, src
	}
	return src
}

func (tr *dellaTrim) trim(i int, d, x, b []float64, lo int, w float64) bool {
	if !tr.sparse[i] {
		return false
	}
	if tr.dens[i] <= 0 {
		clear(d)
		return true
	}
	cs := tr.cache.Get().(*dellaRowCache)
	defer tr.cache.Put(cs)
	c := (*cs)[i]
	x, b = x[:len(d)], b[:len(d)]
	for k := 0; k < len(d); {
		row, pos := tr.rows.of(lo + k)
		if err := tr.row(c, i, row); err != nil {
			// every value of the row was decoded once in prepare: only a
			// file truncated since then fails here; never silently
			fault.Fail(fmt.Errorf("della: %w", err))
		}
		// the run of elements in this row: consecutive positions when the
		// rows are contiguous, else one element
		n := 1
		if tr.rows.inner == 1 {
			n = min(len(d)-k, tr.rows.length-pos)
		}
		ps, key := c.p[pos:pos+n], tr.keys[i]
		xs, bs, ds := x[k:k+n], b[k:k+n], d[k:k+n]
		for q, p := range ps {
			v := xs[q] - bs[q]
			if tr.inv {
				v /= p
			}
			// kept: v * w; dropped: +0 (a mask, not a branch: the draws
			// are unpredictable)
			var keep uint64
			if Uniform(key, lo+k+q) < p {
				keep = 1
			}
			ds[q] = math.Float64frombits(math.Float64bits(v*w) & -keep)
		}
		k += n
	}
	return true
}
