package permute

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"gonum.org/v1/gonum/blas"

	"github.com/wtool/wtool/permute/bfgemm"
	"github.com/wtool/wtool/tensors"
	"github.com/wtool/wtool/tensors/linalg"
)

// member is one model with permutations applied to it (nil: none).
type member struct {
	src   rawSource
	perm  Perms
	label string // names an in-memory model in messages ("model A")
}

// side is the sum of its members times scale: one model, or the mean of
// several (MergeMany matches a model to the mean of the others).
type side struct {
	members []member
	scale   float32 // 0 means 1
}

func (s side) alpha() float32 {
	if s.scale == 0 {
		return 1
	}
	return s.scale
}

// blockBytes is the size of the decoded K-block of each side of a cost
// matrix: big enough that the GEMM runs at full speed (K-blocks of at least
// 256), small enough to stay out of the way of the cost matrix itself.
const blockBytes = 16 << 20

// passBytes is the size of the decoded chunk of each side in a streaming
// pass (distances, objectives).
const passBytes = 4 << 20

// engine computes cost matrices and streaming passes over the spec's
// tensors, reusing its scratch buffers. It is used by one goroutine at a
// time.
type engine struct {
	spec    *Spec
	workers int
	block   int // bytes per side of a cost K-block (tests make it small)
	pass    int // bytes per side of a pass chunk

	bufA, bufB []float32 // major K-blocks
	minA, minB []float32 // minor K-blocks
	bfA, bfB   []uint16  // bf16 K-blocks
	bfTiles    [][]uint16
	// cpus holds a token per core in use: the bf16 GEMM's blocks and the
	// assignment solves running beside it take one each (nil: no limit).
	cpus     chan struct{}
	tiles    [][]float32
	passBufs [][][]float32 // [worker][side]

	stats MatchStats
}

func newEngine(s *Spec) *engine {
	w := max(1, runtime.GOMAXPROCS(0))
	return &engine{spec: s, workers: w, block: blockBytes, pass: passBytes, cpus: make(chan struct{}, w)}
}

// errNonFinite marks a decode that met a value that is not finite.
var errNonFinite = errors.New("non-finite value")

// opened is one tensor of every member of a side, opened for a use.
type opened struct {
	terms []term
	srcs  []rawSource
}

func (o *opened) close() {
	for i, t := range o.terms {
		o.srcs[i].done(t.t.name)
	}
	o.terms, o.srcs = o.terms[:0], o.srcs[:0]
}

// open opens tensor name in every member, checks that the shapes agree with
// want (the first member's shape if want is nil), and builds the terms
// for use u (free: leave the use's part of its axis unpermuted).
func (e *engine) open(o *opened, name string, members []member, u Use, free bool, want []int64) ([]int64, error) {
	for _, m := range members {
		t, err := m.src.raw(name)
		if err != nil {
			o.close()
			if m.label != "" {
				return nil, fmt.Errorf("%s: %w", m.label, err)
			}
			return nil, err
		}
		o.srcs = append(o.srcs, m.src)
		o.terms = append(o.terms, term{t: t})
		if want == nil {
			want = t.shape
		}
		if !slices.Equal(t.shape, want) {
			o.close()
			return nil, fmt.Errorf("tensor %q: shape %v in %s, %v in the model it is matched with", name, t.shape, where(t, m.label), want)
		}
		tm, err := e.spec.newTerm(t, u, m.perm, free)
		if err != nil {
			o.close()
			return nil, err
		}
		o.terms[len(o.terms)-1] = tm
	}
	return want, nil
}

// where names the file of a tensor, or the label of an in-memory model.
func where(t rawTensor, label string) string {
	if t.file != "" {
		return t.file
	}
	if label != "" {
		return label
	}
	return "a model"
}

// tile returns worker w's transposition tile for width w units.
func (e *engine) tile(w, units int) []float32 {
	for len(e.tiles) <= w {
		e.tiles = append(e.tiles, nil)
	}
	if len(e.tiles[w]) < tileRows*units {
		e.tiles[w] = make([]float32, tileRows*units)
	}
	return e.tiles[w]
}

// parts splits the units [0, n) among the workers when the block is large
// enough for that to pay.
func (e *engine) parts(n, width int) [][2]int {
	w := e.workers
	if n*width < 1<<16 || w < 2 {
		return [][2]int{{0, n}}
	}
	w = min(w, n)
	out := make([][2]int, 0, w)
	for i := range w {
		out = append(out, [2]int{i * n / w, (i + 1) * n / w})
	}
	return out
}

// decodeSide decodes the terms' K-positions [k0, k1) for units [u0, u1)
// into dst (row i at dst[(i-u0)*ld:]), summing the terms. ws is the worker's
// tile index. It runs the reads of each term under its file's guard.
func (e *engine) decodeSide(dst []float32, ld int, terms []term, g geom, u0, u1, k0, k1, ws int) error {
	var tile []float32
	if g.minor() {
		tile = e.tiles[ws]
	}
	for ti := range terms {
		tm := &terms[ti]
		err := guard(tm.t, func() error {
			if decode(dst, ld, tm, g, u0, u1, k0, k1, ti > 0, tile) {
				return errNonFinite
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, errNonFinite) {
				return nonFinite(tm.t, "")
			}
			return err
		}
	}
	return nil
}

// runParts runs f on every part, concurrently when there are several, and
// returns the first error in part order.
func runParts(parts [][2]int, f func(w, u0, u1 int) error) error {
	if len(parts) == 1 {
		return f(0, parts[0][0], parts[0][1])
	}
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for w, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = f(w, p[0], p[1])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// kblock is a K-block being filled for the GEMM: for uses whose units are
// rows (major), a and b hold n x cap values (unit i's row at i*cap); for
// uses whose units are the innermost index (minor), cap x n values, the
// stored rows as they are, so that neither the decoding nor the GEMM's
// packing transposes them.
type kblock struct {
	minor  bool
	a, b   []float32
	cap, k int // capacity and filled positions of K
}

// bfBlock is a K-block of bf16 values as stored, for the AVX512-BF16 GEMM
// (package bfgemm): K positions in pairs, pos at a[(pos/2)*2n + 2i + pos%2]
// for unit i, whatever the use's layout.
type bfBlock struct {
	a, b   []uint16
	cap, k int
}

// useBF16 reports whether a use's K positions go to the bf16 block: both
// sides single bf16 tensors (a mean of several models is not a bf16
// value), the kernel available, and a group large enough for its tiles.
func (e *engine) useBF16(n int, oa, ob *opened) bool {
	if !bfgemm.Available() || n < 32 || len(oa.terms) != 1 {
		return false
	}
	ta, tb := oa.terms[0].t, ob.terms[0].t
	return ta.dtype == tensors.BF16 && tb.dtype == tensors.BF16 && bfAligned(ta) && bfAligned(tb)
}

// cost fills c (n x n, row-major, float32) with group g's cost matrix:
// cost[i][j] = sum over every (tensor, axis) the group acts on of
// <unit i of side a, unit j of b>, where a's members have all their
// permutations applied and b has every permutation except g's own. The rows
// are decoded K-block by K-block in the files' dtypes and multiplied by a
// blocked GEMM (bf16 tensors of a pair of models straight into the bf16
// GEMM, others widened to float32), so that memory is the cost matrix plus a
// few blocks of e.block bytes.
func (e *engine) cost(ctx context.Context, g string, a side, b member, c []float32) error {
	n := e.spec.Groups[g]
	c = c[:n*n]
	kcap := max(256, e.block/(4*n))
	if e.block < blockBytes { // tests: small blocks
		kcap = max(1, e.block/(4*n))
	}
	e.bufA = growF32(e.bufA, n*kcap)
	e.bufB = growF32(e.bufB, n*kcap)
	e.minA = growF32(e.minA, n*kcap)
	e.minB = growF32(e.minB, n*kcap)
	major := &kblock{a: e.bufA, b: e.bufB, cap: kcap}
	minor := &kblock{minor: true, a: e.minA, b: e.minB, cap: kcap}
	// bf16 positions take half the bytes: twice the K per block
	bcap := 2 * kcap
	if e.block < blockBytes {
		bcap = max(2, kcap+kcap%2)
	}
	bf := &bfBlock{cap: bcap}
	alpha := a.alpha()
	start := time.Now()
	var gemm time.Duration
	defer func() {
		e.stats.CostTime += time.Since(start)
		e.stats.GEMMTime += gemm
	}()
	beta := float32(0) // the first product overwrites c
	flush := func(kb *kblock) {
		if kb.k == 0 {
			return
		}
		t := time.Now()
		if kb.minor {
			linalg.Implementation{}.Sgemm(blas.Trans, blas.NoTrans, n, n, kb.k, alpha, kb.a, n, kb.b, n, beta, c, n)
		} else {
			linalg.Implementation{}.Sgemm(blas.NoTrans, blas.Trans, n, n, kb.k, alpha, kb.a, kb.cap, kb.b, kb.cap, beta, c, n)
		}
		beta = 1
		gemm += time.Since(t)
		e.stats.GEMMFLOPs += 2 * float64(n) * float64(n) * float64(kb.k)
		kb.k = 0
	}
	flushBF := func() {
		if bf.k == 0 {
			return
		}
		if bf.k%2 == 1 { // pad the last pair with zeros
			row := (bf.k / 2) * 2 * n
			for i := range n {
				bf.a[row+2*i+1], bf.b[row+2*i+1] = 0, 0
			}
			bf.k++
		}
		t := time.Now()
		bfgemm.MulABt(n, n, bf.k, bfgemm.Operand{Data: bf.a, Ld: 2 * n, Layout: bfgemm.PairRows},
			bfgemm.Operand{Data: bf.b, Ld: 2 * n, Layout: bfgemm.PairRows}, c, n, beta != 0, bfgemm.Options{CPUs: e.cpus, Stop: ctx.Done()})
		beta = 1
		gemm += time.Since(t)
		e.stats.GEMMFLOPs += 2 * float64(n) * float64(n) * float64(bf.k)
		e.stats.BF16FLOPs += 2 * float64(n) * float64(n) * float64(bf.k)
		bf.k = 0
	}
	uses := e.spec.costUses(g)
	var oa, ob opened
	defer func() {
		oa.close()
		ob.close()
	}()
	// the next tensor is read into memory while this one is computed
	var fetching sync.WaitGroup
	defer fetching.Wait()
	for ui, u := range uses {
		if err := ctx.Err(); err != nil {
			return err
		}
		fetching.Wait()
		if ui+1 < len(uses) {
			next := uses[ui+1].Tensor
			fetching.Add(1)
			go func() {
				defer fetching.Done()
				for _, m := range a.members {
					m.src.prefetch(next)
				}
				b.src.prefetch(next)
			}()
		}
		shape, err := e.open(&oa, u.Tensor, a.members, u, false, nil)
		if err != nil {
			return err
		}
		if _, err := e.open(&ob, u.Tensor, []member{b}, u, true, shape); err != nil {
			return err
		}
		gm := geomOf(shape, u, n)
		total := gm.k()
		if e.useBF16(n, &oa, &ob) {
			if bf.a == nil {
				e.bfA = growU16(e.bfA, n*bcap)
				e.bfB = growU16(e.bfB, n*bcap)
				bf.a, bf.b = e.bfA, e.bfB
			}
			for k0 := 0; k0 < total; {
				if bf.k == bf.cap {
					flushBF()
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				k1 := min(total, k0+bf.cap-bf.k)
				off := bf.k
				var err error
				if gm.minor() {
					err = runParts(e.parts(k1-k0, n), func(w, r0, r1 int) error {
						if err := decodeRowsBF16(bf.a, n, off+r0, &oa.terms[0], gm, k0+r0, k0+r1); err != nil {
							return err
						}
						return decodeRowsBF16(bf.b, n, off+r0, &ob.terms[0], gm, k0+r0, k0+r1)
					})
				} else {
					err = runParts(e.unitParts(n, k1-k0, bfTile), func(w, u0, u1 int) error {
						tile := e.bfTile(w, k1-k0)
						if err := decodeMajorBF16(bf.a, n, off, &oa.terms[0], gm, u0, u1, k0, k1, tile); err != nil {
							return err
						}
						return decodeMajorBF16(bf.b, n, off, &ob.terms[0], gm, u0, u1, k0, k1, tile)
					})
				}
				if err != nil {
					return err
				}
				bf.k += k1 - k0
				k0 = k1
			}
			oa.close()
			ob.close()
			continue
		}
		kb := major
		if gm.minor() {
			kb = minor
		}
		for k0 := 0; k0 < total; {
			if kb.k == kb.cap {
				flush(kb)
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			k1 := min(total, k0+kb.cap-kb.k)
			var err error
			if kb.minor {
				// workers take ranges of stored rows
				off := kb.k
				err = runParts(e.parts(k1-k0, n), func(w, r0, r1 int) error {
					if err := e.decodeRows(kb.a[(off+r0)*n:], n, oa.terms, gm, k0+r0, k0+r1); err != nil {
						return err
					}
					return e.decodeRows(kb.b[(off+r0)*n:], n, ob.terms, gm, k0+r0, k0+r1)
				})
			} else {
				col := kb.k
				err = runParts(e.parts(n, k1-k0), func(w, u0, u1 int) error {
					if err := e.decodeSide(kb.a[u0*kb.cap+col:], kb.cap, oa.terms, gm, u0, u1, k0, k1, w); err != nil {
						return err
					}
					return e.decodeSide(kb.b[u0*kb.cap+col:], kb.cap, ob.terms, gm, u0, u1, k0, k1, w)
				})
			}
			if err != nil {
				return err
			}
			kb.k += k1 - k0
			k0 = k1
		}
		oa.close()
		ob.close()
	}
	flush(major)
	flush(minor)
	flushBF()
	if err := ctx.Err(); err != nil { // a stopped product is incomplete
		return err
	}
	if beta == 0 { // no tensor had a K position
		clear(c)
	}
	return nil
}

// decodeRows decodes the stored rows [p0, p1) of a minor use (units
// innermost) into dst, row p at dst[(p-p0)*ld:], summing the terms; the
// terms' own permutations of the units and of the rows apply.
func (e *engine) decodeRows(dst []float32, ld int, terms []term, g geom, p0, p1 int) error {
	for ti := range terms {
		tm := &terms[ti]
		err := guard(tm.t, func() error {
			bad := false
			for p := p0; p < p1; p++ {
				sp := p
				if tm.pre != nil {
					sp = tm.pre[p]
				}
				bad = decodeRun(dst[(p-p0)*ld:(p-p0)*ld+g.n], tm.t.data, tm.t.dtype, sp*g.a, tm.ax, ti > 0) || bad
			}
			if bad {
				return errNonFinite
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, errNonFinite) {
				return nonFinite(tm.t, "")
			}
			return err
		}
	}
	return nil
}

// streamPass decodes every tensor the spec permutes, once, for each side
// (every member with all its permutations applied, summed, times the
// side's scale), in chunks of rows in C order, and calls f(w, vals) with
// vals[s] the values of side s for the rows given to worker w. f runs
// concurrently for different workers, each always on the same share of
// each chunk, so that per-worker sums are deterministic.
func (e *engine) streamPass(ctx context.Context, sides []side, f func(w int, vals [][]float32)) error {
	start := time.Now()
	defer func() { e.stats.PassTime += time.Since(start) }()
	for len(e.passBufs) < e.workers {
		e.passBufs = append(e.passBufs, nil)
	}
	opens := make([]opened, len(sides))
	defer func() {
		for i := range opens {
			opens[i].close()
		}
	}()
	for _, name := range e.spec.permuted() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var shape []int64
		for si, sd := range sides {
			sh, err := e.open(&opens[si], name, sd.members, wholeAxis0, false, shape)
			if err != nil {
				return err
			}
			shape = sh
		}
		if len(shape) == 0 {
			for i := range opens {
				opens[i].close()
			}
			continue
		}
		gm := geomOf(shape, wholeAxis0, int(shape[0]))
		rowLen := gm.k()
		elems := max(1, e.pass/4)
		rows := max(1, elems/max(rowLen, 1))
		kstep := rowLen
		if rowLen > elems {
			kstep = elems
		}
		for u0 := 0; u0 < gm.n; u0 += rows {
			u1 := min(gm.n, u0+rows)
			for k0 := 0; k0 < rowLen; k0 += kstep {
				k1 := min(rowLen, k0+kstep)
				if err := ctx.Err(); err != nil {
					return err
				}
				width := k1 - k0
				parts := e.parts(u1-u0, width)
				for w, p := range parts {
					for len(e.passBufs[w]) < len(sides) {
						e.passBufs[w] = append(e.passBufs[w], nil)
					}
					for si := range sides {
						e.passBufs[w][si] = growF32(e.passBufs[w][si], (p[1]-p[0])*width)
					}
					if gm.minor() {
						e.tile(w, p[1]-p[0])
					}
				}
				err := runParts(parts, func(w, p0, p1 int) error {
					vals := e.passBufs[w][:len(sides)]
					for si, sd := range sides {
						v := vals[si][:(p1-p0)*width]
						if err := e.decodeSide(v, width, opens[si].terms, gm, u0+p0, u0+p1, k0, k1, w); err != nil {
							return err
						}
						if a := sd.alpha(); a != 1 {
							for i := range v {
								v[i] *= a
							}
						}
						vals[si] = v
					}
					f(w, vals)
					return nil
				})
				if err != nil {
					return err
				}
			}
		}
		for i := range opens {
			opens[i].close()
		}
	}
	return nil
}

// wholeAxis0 is the use of a pass: every row of a tensor, in order.
var wholeAxis0 = Use{Block: 1, Repeat: 1, Dim: 1}

func growU16(b []uint16, n int) []uint16 {
	if cap(b) < n {
		return make([]uint16, n)
	}
	return b[:n]
}

func growF32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}
