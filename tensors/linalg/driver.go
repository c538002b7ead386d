// Copyright ©2025 The wtool Authors.

package linalg

import (
	"runtime"
	"sync"
	"unsafe"
)

// level selects the family of micro-kernels used by Sgemm and Dgemm.
type level int

const (
	// levelGonum delegates to gonum's pure-Go implementation. It is the
	// fallback on CPUs without AVX2+FMA and on non-amd64 platforms.
	levelGonum level = iota
	// levelGo runs the blocked driver with a portable pure-Go micro-kernel.
	// It is slower than levelGonum and exists so that the driver (packing,
	// edge tiles, parallel splitting) is tested on every platform.
	levelGo
	// levelAVX2 uses the AVX2+FMA assembly kernels (6×16 float32, 6×8 float64).
	levelAVX2
	// levelAVX512 uses the AVX-512F assembly kernels (12×32 float32,
	// 12×16 float64).
	levelAVX512
)

func (l level) String() string {
	switch l {
	case levelGonum:
		return "gonum"
	case levelGo:
		return "go"
	case levelAVX2:
		return "avx2"
	case levelAVX512:
		return "avx512"
	}
	return "unknown"
}

// float is the set of element types supported by the blocked driver.
type float interface{ ~float32 | ~float64 }

// kernelFunc is a register-blocked micro-kernel. It computes
//
//	acc = Σ_p a[p*mr:p*mr+mr] ⊗ b[p*nr:p*nr+nr],  p < k
//
// and stores C = acc (beta == 0, C not read) or C = acc + beta*C into the
// mr×nr tile at c with leading dimension ldc. k >= 1.
type kernelFunc[T float] func(k int, a, b, c *T, ldc int, beta T)

// config describes one blocked GEMM implementation: the micro-kernel, its
// register tile mr×nr and the cache-blocking parameters.
//
// The loop nest is, from the outside in,
//
//	ic (mc rows of op(A), packed A block stays in L3)
//	pc (kc of the inner dimension)
//	jc (nc columns of op(B), packed B block stays in L2)
//	ir (mr rows, one packed A micro-panel)
//	jr (nr columns, one packed B micro-panel)
type config[T float] struct {
	mr, nr     int
	kc, mc, nc int
	kern       kernelFunc[T]
	trans      []transKernel[T] // optional transposing pack kernels
	split      splitKernel[T]   // optional splitting pack kernel
	pool       sync.Pool        // *workspace[T]
}

// workspace holds the per-goroutine packing buffers and the edge tile. The
// packing buffers grow on demand up to the sizes of the cache blocks.
type workspace[T float] struct {
	a, b, tile []T
}

// newConfig returns a configuration for an mr×nr micro-kernel with cache
// blocks of kc (inner dimension), mc (rows, rounded up to a multiple of mr)
// and nc (columns, rounded up to a multiple of nr).
func newConfig[T float](mr, nr, kc, mc, nc int, kern kernelFunc[T]) *config[T] {
	return &config[T]{mr: mr, nr: nr, kc: kc, mc: roundUp(mc, mr), nc: roundUp(nc, nr), kern: kern}
}

// getWorkspace returns a workspace whose buffers hold at least na and nb
// elements.
func (cfg *config[T]) getWorkspace(na, nb int) *workspace[T] {
	ws, ok := cfg.pool.Get().(*workspace[T])
	if !ok {
		ws = &workspace[T]{tile: make([]T, cfg.mr*cfg.nr)}
	}
	if len(ws.a) < na {
		ws.a = make([]T, na)
	}
	if len(ws.b) < nb {
		ws.b = make([]T, nb)
	}
	return ws
}

func (cfg *config[T]) putWorkspace(ws *workspace[T]) { cfg.pool.Put(ws) }

// Current kernel selection. They are only changed by setLevel, which is
// called from init and, in tests, while no GEMM is running.
var (
	curLevel level
	cfg32    *config[float32]
	cfg64    *config[float64]
)

func init() { setLevel(bestLevel()) }

// setLevel selects the kernels used by Sgemm and Dgemm. It reports false,
// and changes nothing, if the CPU does not support l.
func setLevel(l level) bool {
	if !levelSupported(l) {
		return false
	}
	curLevel = l
	switch l {
	case levelGonum:
		cfg32, cfg64 = nil, nil
	case levelGo:
		cfg32 = newConfig[float32](4, 4, 256, 256, 256, goKernel4x4[float32])
		cfg64 = newConfig[float64](4, 4, 256, 256, 256, goKernel4x4[float64])
	default:
		cfg32, cfg64 = archConfigs(l)
	}
	return true
}

// panelStride returns the distance, in elements, between consecutive packed
// micro-panels of width w and depth kc. The panels are padded by one cache
// line so that the pieces written by packSplit, one per panel, do not all
// map to the same cache set.
func panelStride[T float](w, kc int) int {
	var z T
	return w*kc + 64/int(unsafe.Sizeof(z))
}

func roundUp(x, m int) int { return (x + m - 1) / m * m }

func ceilDiv(x, m int) int { return (x + m - 1) / m }

// blockSize splits n into ceil(n/max) nearly equal blocks whose size is a
// multiple of unit (except possibly the last one) and returns that size.
func blockSize(n, max, unit int) int {
	nb := ceilDiv(n, max)
	return min(roundUp(ceilDiv(n, nb), unit), max)
}

// triangle restricts a product to part of C.
type triangle uint8

const (
	triFull  triangle = iota // all of C
	triUpper                 // only elements (i, j) with j >= i
	triLower                 // only elements (i, j) with j <= i
)

// operands bundles the (validated) arguments of one GEMM call,
// C = alpha*op(A)*op(B) + beta*C, with row-major storage. If tri is not
// triFull only that triangle of C is computed and written (used by SYRK).
type operands[T float] struct {
	tA, tB bool
	a      []T
	lda    int
	b      []T
	ldb    int
	alpha  T
	tri    triangle
}

// gemm computes C = alpha*op(A)*op(B) + beta*C. All arguments must have been
// validated; m, n, k > 0 and alpha != 0.
func gemm[T float](cfg *config[T], tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	op := &operands[T]{tA: tA, tB: tB, a: a, lda: lda, b: b, ldb: ldb, alpha: alpha}
	cfg.run(op, cfg.plan(m, n, k, runtime.GOMAXPROCS(0)), m, n, k, beta, c, ldc)
}

// run executes the product described by op as planned by pl.
func (cfg *config[T]) run(op *operands[T], pl plan, m, n, k int, beta T, c []T, ldc int) {
	if pl.tasks() == 1 {
		cfg.serial(op, c, ldc, beta, 0, m, 0, n, 0, k)
		return
	}
	if pl.tk > 1 {
		cfg.splitK(op, pl.tk, m, n, k, beta, c, ldc)
		return
	}
	rows := roundUp(ceilDiv(m, pl.tm), cfg.mr)
	cols := roundUp(ceilDiv(n, pl.tn), cfg.nr)
	tn := ceilDiv(n, cols)
	parallelFor(ceilDiv(m, rows)*tn, func(t int) {
		i0, j0 := t/tn*rows, t%tn*cols
		cfg.serial(op, c, ldc, beta, i0, min(i0+rows, m), j0, min(j0+cols, n), 0, k)
	})
}

// splitK computes C = alpha*op(A)*op(B) + beta*C by splitting the inner
// dimension into tk parts computed concurrently. The first part is computed
// directly into C, the others into temporary m×n buffers that are then added
// to C. It is used when C is too small to be split among the workers.
func (cfg *config[T]) splitK(op *operands[T], tk, m, n, k int, beta T, c []T, ldc int) {
	kper := ceilDiv(k, tk)
	nparts := ceilDiv(k, kper) - 1 // parts computed into temporary buffers
	tmp := make([]T, nparts*m*n)
	parallelFor(nparts+1, func(t int) {
		p0 := t * kper
		if t == 0 {
			cfg.serial(op, c, ldc, beta, 0, m, 0, n, 0, min(kper, k))
			return
		}
		buf := tmp[(t-1)*m*n : t*m*n]
		cfg.serial(op, buf, n, 0, 0, m, 0, n, p0, min(p0+kper, k))
	})
	for p := range nparts {
		buf := tmp[p*m*n : (p+1)*m*n]
		for i := range m {
			crow := c[i*ldc : i*ldc+n]
			brow := buf[i*n : i*n+n]
			for j, v := range brow {
				crow[j] += v
			}
		}
	}
}

// serial computes the block C[i0:i1, j0:j1] (+)= alpha*op(A)[i0:i1, p0:p1]*op(B)[p0:p1, j0:j1]
// on the calling goroutine. Element (i, j) of C is c[i*ldc+j]. beta is
// applied to C in the first pass over the inner dimension.
func (cfg *config[T]) serial(op *operands[T], c []T, ldc int, beta T, i0, i1, j0, j1, p0, p1 int) {
	mcb := blockSize(i1-i0, cfg.mc, cfg.mr)
	kcb := blockSize(p1-p0, cfg.kc, 1)
	ncb := blockSize(j1-j0, cfg.nc, cfg.nr)
	ws := cfg.getWorkspace(ceilDiv(mcb, cfg.mr)*panelStride[T](cfg.mr, kcb), ceilDiv(ncb, cfg.nr)*panelStride[T](cfg.nr, kcb))
	defer cfg.putWorkspace(ws)
	for ic := i0; ic < i1; ic += mcb {
		mc := min(mcb, i1-ic)
		for pc := p0; pc < p1; pc += kcb {
			kc := min(kcb, p1-pc)
			bet := beta
			if pc != p0 {
				bet = 1
			}
			cfg.packA(ws.a, op.a, op.lda, op.tA, ic, pc, mc, kc, op.alpha)
			for jc := j0; jc < j1; jc += ncb {
				nc := min(ncb, j1-jc)
				if op.tri.excludes(ic, ic+mc, jc, jc+nc) {
					continue
				}
				cfg.packB(ws.b, op.b, op.ldb, op.tB, pc, jc, kc, nc)
				cfg.macroKernel(ws, op.tri, ic, jc, mc, nc, kc, c, ldc, bet)
			}
		}
	}
}

// excludes reports whether the block of rows [i0, i1) and columns [j0, j1)
// has no element in the triangle t.
func (t triangle) excludes(i0, i1, j0, j1 int) bool {
	switch t {
	case triUpper:
		return j1-1 < i0
	case triLower:
		return j0 > i1-1
	}
	return false
}

// includes reports whether every element of the block of rows [i0, i1)
// and columns [j0, j1) is in the triangle t.
func (t triangle) includes(i0, i1, j0, j1 int) bool {
	switch t {
	case triUpper:
		return j0 >= i1-1
	case triLower:
		return j1-1 <= i0
	}
	return true
}

// macroKernel multiplies the packed mc×kc block of A by the packed kc×nc
// block of B into the block of C at rows ic and columns jc (element (i, j)
// of C is c[i*ldc+j]). Only the elements in the triangle tri are written.
func (cfg *config[T]) macroKernel(ws *workspace[T], tri triangle, ic, jc, mc, nc, kc int, c []T, ldc int, beta T) {
	c = c[ic*ldc+jc:]
	mr, nr := cfg.mr, cfg.nr
	kern := cfg.kern
	tile := ws.tile
	sa, sb := panelStride[T](mr, kc), panelStride[T](nr, kc)
	for ir := 0; ir < mc; ir += mr {
		mrr := min(mr, mc-ir)
		ap := &ws.a[ir/mr*sa]
		for jr := 0; jr < nc; jr += nr {
			nrr := min(nr, nc-jr)
			bp := &ws.b[jr/nr*sb]
			gi, gj := ic+ir, jc+jr
			if tri.excludes(gi, gi+mrr, gj, gj+nrr) {
				continue
			}
			inside := tri.includes(gi, gi+mrr, gj, gj+nrr)
			if mrr == mr && nrr == nr && inside {
				// Bounds check of the whole tile before the unchecked kernel.
				_ = c[(ir+mr-1)*ldc+jr+nr-1]
				kern(kc, ap, bp, &c[ir*ldc+jr], ldc, beta)
				continue
			}
			kern(kc, ap, bp, &tile[0], nr, 0)
			for i := range mrr {
				lo, hi := 0, nrr
				if !inside {
					// Columns j with gj+j in the triangle for row gi+i.
					if tri == triUpper {
						lo = min(max(gi+i-gj, 0), nrr)
					} else {
						hi = min(max(gi+i-gj+1, 0), nrr)
					}
				}
				crow := c[(ir+i)*ldc+jr:][lo:hi]
				trow := tile[i*nr:][lo:hi]
				if beta == 0 {
					copy(crow, trow)
				} else {
					for j, v := range trow {
						crow[j] = v + beta*crow[j]
					}
				}
			}
		}
	}
}

// transKernel is an assembly kernel that transposes a block of rows source
// rows into a packed panel: for i < rows and p < cols*kb it sets
// dst[p*w+i] = alpha*src[i*ld+p].
type transKernel[T float] struct {
	rows, cols int
	fn         func(dst *T, w int, src *T, ld int, kb int, alpha T)
}

// packT sets dst[p*w+i] = alpha*src[i*ld+p] for i < rows and p < kc, using
// the transposing kernels tks (largest rows first, all with the same cols)
// where possible and scalar code for the remaining rows and columns.
func packT[T float](tks []transKernel[T], dst []T, w int, src []T, ld, rows, kc int, alpha T) {
	i, kdone := 0, 0
	for _, tk := range tks {
		kb := kc / tk.cols
		if kb == 0 {
			break
		}
		kdone = kb * tk.cols
		for ; i+tk.rows <= rows; i += tk.rows {
			// Bounds checks of the last elements written and read.
			_ = dst[(kdone-1)*w+i+tk.rows-1]
			_ = src[(i+tk.rows-1)*ld+kdone-1]
			tk.fn(&dst[i], w, &src[i*ld], ld, kb, alpha)
		}
	}
	// Remaining columns of the rows done by the kernels.
	if kdone < kc {
		for r := range i {
			srow := src[r*ld+kdone : r*ld+kc]
			d := dst[kdone*w+r:]
			for p, v := range srow {
				d[p*w] = alpha * v
			}
		}
	}
	// Remaining rows.
	for r := i; r < rows; r++ {
		srow := src[r*ld : r*ld+kc]
		d := dst[r:]
		for p, v := range srow {
			d[p*w] = alpha * v
		}
	}
}

// splitKernel is an assembly kernel that scatters one stored row into the
// rows of npieces consecutive micro-panels: for q < npieces and j < w it sets
// dst[q*pstride+j] = alpha*src[q*w+j]. ld is the distance between stored
// rows; the kernel prefetches the row two rows ahead.
type splitKernel[T float] func(dst *T, w, pstride int, src *T, npieces, ld int, alpha T)

// packSplit packs the kc×n block src (element (p, j) at src[p*ld+j], scaled
// by alpha) into micro-panels of width w: element (p, j) goes to
// dst[(j/w)*panelStride(w, kc) + p*w + j%w]. Columns beyond n in the last
// panel are zero.
func (cfg *config[T]) packSplit(dst []T, w int, src []T, ld, n, kc int, alpha T) {
	full := n / w
	rem := n - full*w
	pstride := panelStride[T](w, kc)
	for p := range kc {
		row := src[p*ld : p*ld+n]
		d := dst[p*w:]
		if full > 0 {
			if cfg.split != nil {
				_ = d[(full-1)*pstride+w-1] // bounds check of the last element
				cfg.split(&d[0], w, pstride, &row[0], full, ld, alpha)
			} else {
				for q := range full {
					dq := d[q*pstride:][:w]
					for j, v := range row[q*w : q*w+w] {
						dq[j] = alpha * v
					}
				}
			}
		}
		if rem > 0 {
			dq := d[full*pstride:][:w]
			for j, v := range row[full*w:] {
				dq[j] = alpha * v
			}
			clear(dq[rem:])
		}
	}
}

// packTrans packs the n×kc block src (element (j, p) at src[j*ld+p], scaled
// by alpha) into micro-panels of width w: element (j, p) goes to
// dst[(j/w)*panelStride(w, kc) + p*w + j%w]. Rows beyond n in the last panel
// are zero.
func (cfg *config[T]) packTrans(dst []T, w int, src []T, ld, n, kc int, alpha T) {
	pstride := panelStride[T](w, kc)
	for jr := 0; jr < n; jr += w {
		rows := min(w, n-jr)
		panel := dst[jr/w*pstride:][:w*kc]
		packT(cfg.trans, panel, w, src[jr*ld:], ld, rows, kc, alpha)
		if rows < w {
			for p := range kc {
				clear(panel[p*w+rows : p*w+w])
			}
		}
	}
}

// packA packs alpha*op(A)[i0:i0+mc, p0:p0+kc] into dst as micro-panels of
// mr rows, panelStride(mr, kc) apart; within a panel element (i, p) is at
// p*mr+i.
// Rows beyond mc in the last panel are zero.
func (cfg *config[T]) packA(dst, a []T, lda int, trans bool, i0, p0, mc, kc int, alpha T) {
	if trans {
		// op(A)[i, p] = a[p*lda+i]: split rows of the stored matrix.
		cfg.packSplit(dst, cfg.mr, a[p0*lda+i0:], lda, mc, kc, alpha)
	} else {
		// op(A)[i, p] = a[i*lda+p]: transpose rows of the stored matrix.
		cfg.packTrans(dst, cfg.mr, a[i0*lda+p0:], lda, mc, kc, alpha)
	}
}

// packB packs op(B)[p0:p0+kc, j0:j0+nc] into dst as micro-panels of nr
// columns, panelStride(nr, kc) apart; within a panel element (p, j) is at
// p*nr+j.
// Columns beyond nc in the last panel are zero.
func (cfg *config[T]) packB(dst, b []T, ldb int, trans bool, p0, j0, kc, nc int) {
	if trans {
		// op(B)[p, j] = b[j*ldb+p]: transpose rows of the stored matrix.
		cfg.packTrans(dst, cfg.nr, b[j0*ldb+p0:], ldb, nc, kc, 1)
	} else {
		// op(B)[p, j] = b[p*ldb+j]: split rows of the stored matrix.
		cfg.packSplit(dst, cfg.nr, b[p0*ldb+j0:], ldb, nc, kc, 1)
	}
}

// scaleC sets C = beta*C for the m×n matrix C; beta == 0 sets C to zero
// without reading it.
func scaleC[T float](m, n int, beta T, c []T, ldc int) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}
