package merge

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

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
// like DARE's by the seed, the tensor name and the model's values (here a
// sample of them: sampledHashes), so the result does not depend on the
// order of the models or on chunking.
//
// Memory: decisions are made row by row where the merge needs them, in a
// per-goroutine cache of one row per model (about 50 bytes per entry of a
// row: decide's buckets settle most decisions without ranking, and only
// the open ones get exact ranks, ties by index), never for the whole
// tensor; with l1 rescaling the norm pass records them, a bit per element,
// for the merge pass (keepRecorder). Inverse rescaling needs every keep
// probability: a row's ranks then come from one stable radix sort of its
// magnitudes (sortPacked, or argsortStable when the keys leave no room for
// the index).
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
	n      int              // elements of the tensor
	thr    []keepThresholds // per model (l1 or no rescaling)
	kept   [][]uint64       // per model: recorded keep decisions, a bit per element (nil: none)
	frees  []func()         // unmap kept
	mode   int              // keepDecide, keepRecord or keepReplay
	wide   bool             // trims read values beyond their block, not yet checked (checkInputs)
}

// Modes of a dellaTrim's keep decisions (see keepRecorder).
const (
	keepDecide = iota // decide in every trim
	keepRecord        // decide and record the decisions
	keepReplay        // replay the recorded decisions
)

// recordBytes: a bit per element of each sparsified model (only keep
// decisions are recorded: inverse rescaling needs the probabilities).
func (tr *dellaTrim) recordBytes() int64 {
	if tr.inv {
		return 0
	}
	var words int64
	for i, sp := range tr.sparse {
		if sp && tr.dens[i] > 0 {
			words += int64(tr.n+63) / 64
		}
	}
	return 8 * words
}

// record maps the bits outside the Go heap (see offHeapWords), so that
// release returns them at once; false when the mapping fails (the trimmer
// keeps deciding).
func (tr *dellaTrim) record() bool {
	kept := make([][]uint64, len(tr.sparse))
	var frees []func()
	for i, sp := range tr.sparse {
		if sp && tr.dens[i] > 0 {
			w, free, err := offHeapWords((tr.n + 63) / 64)
			if err != nil {
				for _, f := range frees {
					f()
				}
				return false
			}
			kept[i], frees = w, append(frees, free)
		}
	}
	tr.kept, tr.frees, tr.mode = kept, frees, keepRecord
	// a kernel dropped without its Done (a failed write) still unmaps them
	runtime.AddCleanup(tr, func(fs []func()) {
		for _, f := range fs {
			f()
		}
	}, frees)
	return true
}

func (tr *dellaTrim) replay() { tr.mode = keepReplay }

// release unmaps the recorded decisions; the trimmer must not be used
// after it.
func (tr *dellaTrim) release() {
	for _, f := range tr.frees {
		f()
	}
	tr.kept, tr.frees, tr.mode = nil, nil, keepDecide
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

// dellaRow is one row's keep decisions (or, with inverse rescaling, keep
// probabilities) of one model.
type dellaRow struct {
	model, row int
	x, b       []float64
	keys       []uint64
	packed     []uint64 // sortPacked's second buffer
	idx, tmp   []int32  // the argsort and its scratch
	hist       *[1 << maxDigit]int32
	p          []float64 // by position in the row (inverse rescaling)
	kbits      []uint64  // by position, a bit each: kept (l1 or no rescaling)
	openw      []uint64  // decide: by position, a bit each: left open by decideBits
	memb       []int32   // decide: one bucket's members
	bk         []uint16  // decide: each entry's bucket
	order      []int32   // decide: the row in bucket order
	rank       []int32   // decide: exact ranks of the entries of sorted buckets
	amb        []int32   // decide: the entries whose bucket leaves the decision open
	start, cur []int32   // decide: bucket b holds ranks [start[b], start[b+1])
	sorted     []bool    // decide: buckets sorted for exact ranks
	pk         []uint64  // decide: each bucket's bounds on its thresholds (bucketStarts)
	err        error
}

// dellaRows caches one row per model (a block's trims alternate models).
type dellaRowCache []*dellaRow

func (s dellaSparsifier) prepare(ctx context.Context, t *TensorJob, ins []*Input, params []float64) (trimmer, error) {
	n := len(ins) - 1
	tr := &dellaTrim{ins: ins, keys: make([]uint64, n), dens: make([]float64, n), eps: make([]float64, n),
		sparse: make([]bool, n), rows: dellaRows(t.Shape, t.N), inv: s.inverse, n: t.N, thr: make([]keepThresholds, n)}
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
		if d > 0 && !s.inverse {
			// Uniform(key, e) < p exactly when its 53 bits, as an
			// integer n, satisfy n < ceil(p * 2^53): the thresholds of
			// every rank, shared by the rows
			tr.thr[i] = newKeepThresholds(d, eps, tr.rows.length)
		}
		if d > 0 {
			hashed = append(hashed, ins[i])
			which = append(which, i)
		}
	}
	if len(which) > 0 {
		// the draws' keys follow a sample of each model's values (the
		// whole values would take a pass over the models; see
		// sampledHashes)
		hs, err := sampledHashes(ctx, t, hashed)
		if err != nil {
			return nil, err
		}
		for k, i := range which {
			tr.keys[i] = MaskKey(s.seed, t.Name, hs[k])
		}
		// when a row can reach beyond a block, trims read values beyond
		// their block: see checkInputs
		r := tr.rows
		tr.wide = r.inner != 1 || BlockSize%r.length != 0
	}
	return tr, nil
}

// checkInputs decodes every value of the inputs once when trims read
// values beyond their block (rows longer than a block, or strided), so
// that a non-finite one is an error here, not a failure inside a trim
// (within a block, the passes' own decoding reports it). The L1 pass
// needs no such pass when it records the decisions: recordBlock returns
// the errors.
func (tr *dellaTrim) checkInputs(ctx context.Context, t *TensorJob) error {
	if !tr.wide {
		return nil
	}
	tr.wide = false
	return t.Pass(ctx, tr.ins, func(int, int, [][]float64) error { return nil })
}

// keepThresholds are the thresholds of a row's keep decisions: the entry
// of rank r is kept when its draw's 53 bits are below byRank[r] (see
// prepare); line bounds them cheaply (decideBits).
type keepThresholds struct {
	byRank []uint64
	line   rankLine
}

func newKeepThresholds(d, eps float64, m int) keepThresholds {
	return keepThresholds{dellaThresholds(d, eps, m), newRankLine(d, eps, m)}
}

// dellaThresholds returns ceil(p(r) * 2^53) for the ranks r of a row of m.
func dellaThresholds(d, eps float64, m int) []uint64 {
	thr := make([]uint64, m)
	for r := range m {
		thr[r] = uint64(math.Ceil(dellaProb(d, eps, r, m) * (1 << 53)))
	}
	return thr
}

// dellaProb is the keep probability of the entry of rank r in a row of m:
// density - epsilon + 2 epsilon r / (m - 1), density for a row of one.
func dellaProb(d, eps float64, r, m int) float64 {
	if m > 1 {
		return d - eps + 2*eps*float64(r)/float64(m-1)
	}
	return d
}

// row returns model i's keep probabilities of a row, from c when it holds
// them.
//
// x and b, when not nil, are the row's values of model i and of the base
// (the caller's block holds the whole row); else the row is decoded.
func (tr *dellaTrim) row(c *dellaRow, i, row int, x, b []float64) error {
	if c.model == i && c.row == row {
		return c.err
	}
	m := tr.rows.length
	if cap(c.x) < m {
		c.x, c.b, c.keys = make([]float64, m), make([]float64, m), make([]uint64, m)
		if tr.inv {
			c.p, c.packed, c.idx, c.tmp = make([]float64, m), make([]uint64, m), make([]int32, m), make([]int32, m)
			c.hist = new([1 << maxDigit]int32)
		} else {
			nb := tr.buckets()
			c.kbits, c.openw, c.bk, c.order, c.rank = make([]uint64, (m+63)/64), make([]uint64, (m+63)/64), make([]uint16, m), make([]int32, m), make([]int32, m)
			c.memb = make([]int32, m)
			c.start, c.cur, c.sorted = make([]int32, nb+1), make([]int32, nb), make([]bool, nb)
			c.pk = make([]uint64, nb)
		}
	}
	c.x, c.b, c.keys = c.x[:m], c.b[:m], c.keys[:m]
	c.model, c.row, c.err = i, row, nil
	if x == nil {
		x, b = c.x, c.b
		if err := tr.rows.decode(tr.ins[i], row, x); err != nil {
			c.err = err
			return err
		}
		if err := tr.rows.decode(tr.ins[len(tr.ins)-1], row, b); err != nil {
			c.err = err
			return err
		}
	}
	d, eps := tr.dens[i], tr.eps[i]
	prob := func(rank int) float64 { return dellaProb(d, eps, rank, m) }
	if !tr.inv {
		tr.decide(c, i, row, x, b)
		return nil
	}
	c.packed, c.idx, c.tmp, c.p = c.packed[:m], c.idx[:m], c.tmp[:m], c.p[:m]
	// the rank of entry j: its position in the stable argsort of the keys
	// (the keys below its own, plus the equal keys at smaller indices)
	if sorted, low, ok := sortPacked(x, b, c.keys, c.packed, c.hist); ok {
		for rank, v := range sorted {
			c.p[v&low] = prob(rank)
		}
		return nil
	}
	for j := range x {
		c.keys[j] = math.Float64bits(math.Abs(x[j] - b[j]))
	}
	for rank, j := range argsortStable(c.keys, c.idx, c.tmp, (*[256]int32)(c.hist[:256])) {
		c.p[j] = prob(rank)
	}
	return nil
}

// buckets is the number of buckets decide sorts a row's entries into:
// about half the row length, within [64, 8192].
func (tr *dellaTrim) buckets() int {
	return min(8192, max(64, 1<<bits.Len(uint(tr.rows.length))/4))
}

// decide sets c.kbits, the keep decisions of a row (Uniform(key, e) < p of
// the entry's rank, as draw < thr[rank]: see prepare), without ranking
// every entry. Zero magnitudes are the smallest keys, ranked among
// themselves by index as they come. The others go to buckets by their
// float64 bits (so buckets follow key order), scaled to span the row's
// non-zero range; an entry of a bucket holding ranks [lo, hi] is kept when
// draw < thr[lo] and dropped when draw >= thr[hi], whatever its rank
// within the bucket (thr is non-decreasing). Only the rare entries in
// between need their exact rank: for a few, a count over their bucket's
// members; beyond, the row in bucket order and their buckets sorted
// (stably: ties by index). The decisions are exactly those of the ranks.
// The loops over the row are the kernels of della_kern.go (AVX-512, and
// scalar assembly for the bucket counts, where the CPU has AVX-512).
func (tr *dellaTrim) decide(c *dellaRow, i, row int, xs, bs []float64) {
	m := len(xs)
	bs = bs[:m]
	thr, line := tr.thr[i].byRank, tr.thr[i].line
	key := tr.keys[i]
	e0, stride := tr.rows.start(row), tr.rows.stride
	ctr, step := key+uint64(e0)*golden, uint64(stride)*golden // Uniform's counter
	kb, openw := c.kbits[:(m+63)/64], c.openw[:(m+63)/64]
	clear(kb)
	clear(openw)
	// buckets scaled to the non-zero keys (all zero: every entry is in
	// bucket 0, ranked by index)
	top, low := keyRange(xs, bs)
	nb := len(c.cur)
	sh := uint(0)
	for (top>>sh)-(low>>sh) > uint64(nb-2) {
		sh++
	}
	base := low>>sh - 1 // the smallest non-zero key's bucket is 1
	bk := c.bk[:m]
	bucketize(bk, xs, bs, sh, base)
	// bucket b holds ranks [start[b], start[b+1])
	start := c.start[:nb+1]
	clear(start)
	bucketCounts(start[:nb], bk)
	pk := c.pk[:nb]
	bucketStarts(start, m, line, pk)
	decideBits(kb, openw, bk, ctr, step, pk, line, 0)
	// the entries the bounds left open: most are settled by the exact
	// thresholds of their bucket's first and last rank; the others need
	// their rank
	amb := c.amb[:0]
	for w, v := range openw {
		for ; v != 0; v &= v - 1 {
			j := w*64 + bits.TrailingZeros64(v)
			if b := bk[j]; b != 0 {
				n := splitmix64(ctr+uint64(j)*step) >> 11
				if n < thr[start[b]] {
					kb[w] |= 1 << (j & 63)
					continue
				}
				if n >= thr[start[b+1]-1] {
					continue
				}
			}
			amb = append(amb, int32(j))
		}
	}
	c.amb = amb
	if len(amb) == 0 {
		return
	}
	keyOf := func(q int32) uint64 { return magKey(xs[q], bs[q]) }
	few := len(amb) <= 16
	if !few {
		// the row in bucket order (stable: by index within a bucket)
		copy(c.cur, start[:nb])
		for j, b := range bk {
			c.order[c.cur[b]] = int32(j)
			c.cur[b]++
		}
	}
	for _, j := range amb {
		b := bk[j]
		var rank int32
		if few {
			// the members of j's bucket before j in (key, index) order
			kj := keyOf(j)
			rank = start[b]
			c.memb = bucketMembers(c.memb, bk, b)
			for _, q := range c.memb {
				if kq := keyOf(q); kq < kj || kq == kj && q < j {
					rank++
				}
			}
		} else {
			if !c.sorted[b] {
				members := c.order[start[b]:start[b+1]]
				for _, q := range members {
					c.keys[q] = keyOf(q)
				}
				sortByKey(members, c.keys)
				for r, q := range members {
					c.rank[q] = start[b] + int32(r)
				}
				c.sorted[b] = true
			}
			rank = c.rank[j]
		}
		n := splitmix64(ctr+uint64(j)*step) >> 11
		w, bit := j>>6, uint64(1)<<(j&63)
		kb[w] = kb[w]&^bit | bit&-b2u(n < thr[rank])
	}
	if !few {
		for _, j := range amb {
			c.sorted[bk[j]] = false
		}
	}
}

// sortByKey sorts entries (in index order) by key, stably: insertion sort
// for small buckets, a sort of the keys packed with their positions
// (stable by construction) for larger ones, nothing when all keys are
// equal.
func sortByKey(idx []int32, keys []uint64) {
	if len(idx) < 2 {
		return
	}
	if len(idx) <= 32 {
		for a := 1; a < len(idx); a++ {
			v := idx[a]
			k := keys[v]
			z := a
			for z > 0 && keys[idx[z-1]] > k {
				idx[z] = idx[z-1]
				z--
			}
			idx[z] = v
		}
		return
	}
	k0 := keys[idx[0]]
	same := true
	for _, q := range idx[1:] {
		same = same && keys[q] == k0
	}
	if same {
		return
	}
	slices.SortStableFunc(idx, func(p, q int32) int { return cmp.Compare(keys[p], keys[q]) })
}

// maxDigit is the widest digit, in bits, of sortPacked's radix passes.
const maxDigit = 11

// sortPacked sorts the magnitudes |x[j] - b[j]| of a row, stably, when
// their float64 bits leave the low bits.Len(m-1) bits zero (always for
// bf16 and f16 inputs, and f32 ones whose values are within 2^14 of each
// other): each key carries its index in those bits, an LSD radix sort of
// the packed words orders them by key then index (stability: the index
// bits are never sorted on), with digits of up to maxDigit bits covering
// only the bits that differ between keys. It returns the sorted words (one
// of the buffers keys and tmp) and the index mask; ok is false when a key
// needs its low bits (the caller sorts with argsortStable).
func sortPacked(x, b []float64, keys, tmp []uint64, hist *[1 << maxDigit]int32) (sorted []uint64, low uint64, ok bool) {
	m := len(keys)
	low = uint64(1)<<bits.Len(uint(max(m-1, 0))) - 1
	or, and := uint64(0), ^uint64(0)
	for j := range keys {
		k := math.Float64bits(math.Abs(x[j] - b[j]))
		or |= k
		and &= k
		keys[j] = k | uint64(j)
	}
	if or&low != 0 {
		return nil, 0, false
	}
	varying := (or ^ and) &^ low
	if varying == 0 {
		return keys, low, true // all equal: index order
	}
	lo, hi := bits.TrailingZeros64(varying), 63-bits.LeadingZeros64(varying)
	width := min(maxDigit, max(4, bits.Len(uint(m))-1))
	passes := (hi - lo + width) / width
	width = (hi - lo + passes) / passes // spread evenly: (hi-lo+1)/passes, rounded up
	mask := uint64(1)<<width - 1
	h := hist[:1<<width]
	src, dst := keys, tmp
	for p := range passes {
		sh := uint(lo + p*width)
		clear(h)
		for _, v := range src {
			h[(v>>sh)&mask]++
		}
		var sum int32
		for d, c := range h {
			h[d] = sum
			sum += c
		}
		for _, v := range src {
			d := (v >> sh) & mask
			dst[h[d]] = v
			h[d]++
		}
		src, dst = dst, src
	}
	return src, low, true
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
	return tr.trimScaled(i, d, x, b, lo, w, 1)
}

// trimScaled is trim followed by a multiplication by s (see scaledTrimmer).
func (tr *dellaTrim) trimScaled(i int, d, x, b []float64, lo int, w, s float64) bool {
	if !tr.sparse[i] {
		return false
	}
	if tr.dens[i] <= 0 {
		clear(d)
		return true
	}
	if tr.mode == keepReplay {
		maskDelta(d, x, b, tr.kept[i], lo, w, s)
		return true
	}
	key := tr.keys[i]
	err := tr.runs(i, x[:len(d)], b[:len(d)], lo, func(c *dellaRow, k, pos int, xs, bs []float64) {
		ds := d[k : k+len(xs)]
		if !tr.inv {
			// kept: v * w; dropped: +0 (a mask, not a branch)
			maskDelta(ds, xs, bs, c.kbits, pos, w, s)
			if tr.mode == keepRecord {
				orBits(tr.kept[i], lo+k, c.kbits, pos, len(xs))
			}
			return
		}
		for q, p := range c.p[pos : pos+len(xs)] {
			// kept: v / p * w; dropped: +0 (a mask, not a branch: the
			// draws are unpredictable)
			keep := b2u(Uniform(key, lo+k+q) < p)
			ds[q] = math.Float64frombits(math.Float64bits((xs[q]-bs[q])/p*w*s) & -keep)
		}
	})
	if err != nil {
		// checkInputs decoded every value the rows read: only a file
		// truncated since then fails here; never silently
		fault.Fail(fmt.Errorf("della: %w", err))
	}
	return true
}

// recordBlock records model i's keep decisions of a block without
// trimming (see keepRecorder).
func (tr *dellaTrim) recordBlock(i int, x, b []float64, lo int) ([]uint64, bool, error) {
	if !tr.sparse[i] || tr.dens[i] <= 0 || tr.mode != keepRecord {
		return nil, false, nil
	}
	err := tr.runs(i, x, b[:len(x)], lo, func(c *dellaRow, k, pos int, xs, _ []float64) {
		orBits(tr.kept[i], lo+k, c.kbits, pos, len(xs))
	})
	return tr.kept[i], err == nil, err
}

// runs calls fn on the runs of a block (elements lo, lo+1, ... of x and b)
// within one row, with model i's decisions of the row in c: the run's
// elements are xs and bs, from element k of the block and position pos
// of the row. It stops at the first row it cannot decode.
func (tr *dellaTrim) runs(i int, x, b []float64, lo int, fn func(c *dellaRow, k, pos int, xs, bs []float64)) error {
	cs := tr.cache.Get().(*dellaRowCache)
	defer tr.cache.Put(cs)
	c := (*cs)[i]
	for k := 0; k < len(x); {
		row, pos := tr.rows.of(lo + k)
		// the block's own values when it holds the whole row
		var xr, br []float64
		if m := tr.rows.length; tr.rows.inner == 1 && pos == 0 && len(x)-k >= m {
			xr, br = x[k:k+m], b[k:k+m]
		}
		if err := tr.row(c, i, row, xr, br); err != nil {
			return err
		}
		// the run of elements in this row: consecutive positions when the
		// rows are contiguous, else one element
		n := 1
		if tr.rows.inner == 1 {
			n = min(len(x)-k, tr.rows.length-pos)
		}
		fn(c, k, pos, x[k:k+n], b[k:k+n])
		k += n
	}
	return nil
}

// orBits ORs bits [pos, pos+n) of src into dst at bit e, up to a word at a
// time; dst's bits of the range must be zero. A whole word is stored (the
// caller is the only writer of its elements); the parts of words at the
// edges are combined with an atomic OR: the blocks of a pass run
// concurrently and may share those words.
func orBits(dst []uint64, e int, src []uint64, pos, n int) {
	if pos&63 == 0 && e&63 == 0 && n >= 64 {
		// both at word starts (rows and blocks of whole words): the
		// whole words are copied
		w := n >> 6
		copy(dst[e>>6:e>>6+w], src[pos>>6:pos>>6+w])
		e, pos, n = e+w<<6, pos+w<<6, n-w<<6
	}
	for off := 0; off < n; {
		sp, dp := pos+off, e+off
		c := min(64-sp&63, 64-dp&63, n-off)
		v := src[sp>>6] >> (sp & 63)
		if c < 64 {
			v &= 1<<c - 1
		}
		switch {
		case c == 64:
			dst[dp>>6] = v // a whole word: only this block has its elements
		case v != 0:
			atomic.OrUint64(&dst[dp>>6], v<<(dp&63))
		}
		off += c
	}
}
