// Copyright ©2025 The wtool Authors.
//
// bdsqr is adapted from gonum.org/v1/gonum/lapack/gonum/dbdsqr.go
// (Copyright ©2015 The Gonum Authors, BSD 3-clause licence), itself a
// translation of LAPACK's DBDSQR.

//go:build !openblas || !cgo

package lowrank

import (
	"math"

	"gonum.org/v1/gonum/lapack/gonum"
)

// bdsqr computes the SVD B = Ub·diag(d)·Vbᵀ of the n×n upper bidiagonal
// matrix B (diagonal d, superdiagonal e, both overwritten), leaving the
// singular values in d in descending order, vt (n×ncvt, row-major) replaced
// by Vbᵀ·vt and ct (n×ncc) by Ubᵀ·ct. It reports whether the iteration
// converged.
//
// It is LAPACK's DBDSQR (implicit zero-shift/shifted QR sweeps, as in
// gonum's Dbdsqr) for the case of row-major vt and ct, with one change: the
// plane rotations of the sweeps are not applied at once but queued and then
// applied many sweeps at a time, column block by column block, with the
// blocks spread over GOMAXPROCS goroutines. Each block of rows stays in
// cache while dozens of sweeps pass over it, where applying every sweep to
// the whole matrix at once streams it through memory each time, and the
// rotations of a row pair run in an AVX2/FMA kernel on amd64. The scalar
// iteration is unchanged, so d is identical to DBDSQR's.
func bdsqr(n, m int, d, e, vt, ct []float64) bool {
	return bdsqrDeferred(n, n, m, d, e, vt, n, ct, m)
}

// rotBlockBytes is the target size of a block of columns (the rows it
// spans); 1 MiB measured best for n = 2048 on a 1 MiB-L2 CPU.
const rotBlockBytes = 1 << 20

// rotSeq is a queued sequence of plane rotations of consecutive rows: for
// j = 0..cnt-1 (forward) or cnt-1..0 (backward), rows lo+j and lo+j+1 are
// replaced by (c·x + s·y, c·y - s·x) with x = row lo+j, y = row lo+j+1, as
// LAPACK's DLASR('L', 'V', direct).
type rotSeq struct {
	lo, cnt, off int
	fwd          bool
}

// rotQueue holds rotation sequences for one matrix (rows × cols, stride ld).
type rotQueue struct {
	a          []float64
	cols, ld   int
	seqs       []rotSeq
	cs, sn     []float64
	queued     int
	blockWidth int
}

func newRotQueue(a []float64, rows, cols, ld int) *rotQueue {
	// Blocks of up to rotBlockBytes of rows stay in L2 during a flush.
	w := rotBlockBytes / 8 / max(rows, 1)
	w = max(32, min(512, w)) &^ 7
	return &rotQueue{a: a, cols: cols, ld: ld, blockWidth: w}
}

func (q *rotQueue) push(lo int, cs, sn []float64, fwd bool) {
	if q.cols == 0 || len(cs) == 0 {
		return
	}
	q.seqs = append(q.seqs, rotSeq{lo: lo, cnt: len(cs), off: len(q.cs), fwd: fwd})
	q.cs = append(q.cs, cs...)
	q.sn = append(q.sn, sn...)
	q.queued += len(cs)
}

func (q *rotQueue) blocks() int { return (q.cols + q.blockWidth - 1) / q.blockWidth }

// applyBlock applies every queued sequence to columns [b·w, (b+1)·w).
func (q *rotQueue) applyBlock(b int) {
	c0 := b * q.blockWidth
	c1 := min(c0+q.blockWidth, q.cols)
	a, ld := q.a, q.ld
	for _, sq := range q.seqs {
		cs := q.cs[sq.off : sq.off+sq.cnt]
		sn := q.sn[sq.off : sq.off+sq.cnt]
		if sq.fwd {
			for j := range sq.cnt {
				r := (sq.lo + j) * ld
				rotRows(a[r+c0:r+c1], a[r+ld+c0:r+ld+c1], cs[j], sn[j])
			}
		} else {
			for j := sq.cnt - 1; j >= 0; j-- {
				r := (sq.lo + j) * ld
				rotRows(a[r+c0:r+c1], a[r+ld+c0:r+ld+c1], cs[j], sn[j])
			}
		}
	}
}

func (q *rotQueue) reset() {
	q.seqs = q.seqs[:0]
	q.cs = q.cs[:0]
	q.sn = q.sn[:0]
	q.queued = 0
}

// flushRotations applies and clears the queues, in parallel over column
// blocks.
func flushRotations(qs ...*rotQueue) {
	total := 0
	for _, q := range qs {
		total += q.blocks()
	}
	parallelFor(total, func(i int) {
		for _, q := range qs {
			if nb := q.blocks(); i >= nb {
				i -= nb
				continue
			}
			q.applyBlock(i)
			return
		}
	})
	for _, q := range qs {
		q.reset()
	}
}

// rotRows sets x, y = c·x + s·y, c·y - s·x.
func rotRows(x, y []float64, c, s float64) {
	if c == 1 && s == 0 {
		return
	}
	y = y[:len(x)]
	i := 0
	if haveRotFMA && len(x) >= 8 {
		i = len(x) &^ 3
		rotRowsFMA(x[:i], y[:i], c, s)
	}
	for ; i+4 <= len(x); i += 4 {
		x0, x1, x2, x3 := x[i], x[i+1], x[i+2], x[i+3]
		y0, y1, y2, y3 := y[i], y[i+1], y[i+2], y[i+3]
		x[i], x[i+1], x[i+2], x[i+3] = c*x0+s*y0, c*x1+s*y1, c*x2+s*y2, c*x3+s*y3
		y[i], y[i+1], y[i+2], y[i+3] = c*y0-s*x0, c*y1-s*x1, c*y2-s*x2, c*y3-s*x3
	}
	for ; i < len(x); i++ {
		xi, yi := x[i], y[i]
		x[i] = c*xi + s*yi
		y[i] = c*yi - s*xi
	}
}

// bdsqrDeferred is DBDSQR for an upper bidiagonal matrix with NRU = 0
// (see bdsqr).
func bdsqrDeferred(n, ncvt, ncc int, d, e, vt []float64, ldvt int, c []float64, ldc int) bool {
	if n == 0 {
		return true
	}
	impl := gonum.Implementation{}
	qv := newRotQueue(vt, n, ncvt, ldvt)
	qc := newRotQueue(c, n, ncc, ldc)
	// Flush when this many rotations are queued: each row of a block is
	// then touched about 64 times per pass over memory.
	flushAt := max(32*n, 1<<12)

	if n > 1 {
		const maxIter = 6
		const eps = 0x1p-53
		const unfl = 0x1p-1022
		work := make([]float64, 4*(n-1))
		nm1 := n - 1
		nm12 := nm1 + nm1
		nm13 := nm12 + nm1
		idir := 0

		tolmul := math.Max(10, math.Min(100, math.Pow(eps, -1.0/8)))
		tol := tolmul * eps
		var smax float64
		for i := range n {
			smax = math.Max(smax, math.Abs(d[i]))
		}
		for i := range n - 1 {
			smax = math.Max(smax, math.Abs(e[i]))
		}
		// Relative accuracy: threshold from an estimate of the smallest
		// singular value.
		sminoa := math.Abs(d[0])
		if sminoa != 0 {
			mu := sminoa
			for i := 1; i < n; i++ {
				mu = math.Abs(d[i]) * (mu / (mu + math.Abs(e[i-1])))
				sminoa = math.Min(sminoa, mu)
				if sminoa == 0 {
					break
				}
			}
		}
		sminoa = sminoa / math.Sqrt(float64(n))
		thresh := math.Max(tol*sminoa, float64(maxIter*n*n)*unfl)
		maxIt := maxIter * n * n
		iter := 0
		oldl2 := -1
		oldm := -1
		m := n
		var smin float64

	Outer:
		for m > 1 {
			if qv.queued+qc.queued >= flushAt {
				flushRotations(qv, qc)
			}
			if iter > maxIt {
				flushRotations(qv, qc)
				return false
			}
			// Find a diagonal block of the matrix to work on.
			smax = math.Abs(d[m-1])
			var l2 int
			var broke bool
			for l3 := 0; l3 < m-1; l3++ {
				l2 = m - l3 - 2
				abss := math.Abs(d[l2])
				abse := math.Abs(e[l2])
				if abse <= thresh {
					broke = true
					break
				}
				smax = math.Max(math.Max(smax, abss), abse)
			}
			if broke {
				e[l2] = 0
				if l2 == m-2 {
					// Convergence of the bottom singular value.
					m--
					continue
				}
				l2++
			} else {
				l2 = 0
			}
			// The block is l2..m-1. A 2×2 block is handled separately.
			if l2 == m-2 {
				var sinr, cosr, sinl, cosl float64
				d[m-1], d[m-2], sinr, cosr, sinl, cosl = impl.Dlasv2(d[m-2], e[m-2], d[m-1])
				e[m-2] = 0
				qv.push(m-2, []float64{cosr}, []float64{sinr}, true)
				qc.push(m-2, []float64{cosl}, []float64{sinl}, true)
				m -= 2
				continue
			}
			// If working on a new submatrix, choose the shift direction.
			if l2 > oldm-1 || m-1 < oldl2 {
				if math.Abs(d[l2]) >= math.Abs(d[m-1]) {
					idir = 1 // chase the bulge from top to bottom
				} else {
					idir = 2 // from bottom to top
				}
			}
			// Apply the convergence tests.
			if idir == 1 {
				if math.Abs(e[m-2]) <= math.Abs(tol)*math.Abs(d[m-1]) {
					e[m-2] = 0
					continue
				}
				mu := math.Abs(d[l2])
				smin = mu
				for l3 := l2; l3 < m-1; l3++ {
					if math.Abs(e[l3]) <= tol*mu {
						e[l3] = 0
						continue Outer
					}
					mu = math.Abs(d[l3+1]) * (mu / (mu + math.Abs(e[l3])))
					smin = math.Min(smin, mu)
				}
			} else {
				if math.Abs(e[l2]) <= math.Abs(tol)*math.Abs(d[l2]) {
					e[l2] = 0
					continue
				}
				mu := math.Abs(d[m-1])
				smin = mu
				for l3 := m - 2; l3 >= l2; l3-- {
					if math.Abs(e[l3]) <= tol*mu {
						e[l3] = 0
						continue Outer
					}
					mu = math.Abs(d[l3]) * (mu / (mu + math.Abs(e[l3])))
					smin = math.Min(smin, mu)
				}
			}
			oldl2 = l2
			oldm = m
			// Compute the shift.
			var shift float64
			if float64(n)*tol*(smin/smax) <= math.Max(eps, (1.0/100)*tol) {
				shift = 0
			} else {
				var sl2 float64
				if idir == 1 {
					sl2 = math.Abs(d[l2])
					shift, _ = impl.Dlas2(d[m-2], e[m-2], d[m-1])
				} else {
					sl2 = math.Abs(d[m-1])
					shift, _ = impl.Dlas2(d[l2], e[l2], d[l2+1])
				}
				if sl2 > 0 && (shift/sl2)*(shift/sl2) < eps {
					shift = 0
				}
			}
			iter += m - l2 + 1
			cnt := m - l2 - 1 // rotations in this sweep
			if shift == 0 {
				if idir == 1 {
					cs := 1.0
					oldcs := 1.0
					var sn, r, oldsn float64
					for i := l2; i < m-1; i++ {
						cs, sn, r = impl.Dlartg(d[i]*cs, e[i])
						if i > l2 {
							e[i-1] = oldsn * r
						}
						oldcs, oldsn, d[i] = impl.Dlartg(oldcs*r, d[i+1]*sn)
						work[i-l2] = cs
						work[i-l2+nm1] = sn
						work[i-l2+nm12] = oldcs
						work[i-l2+nm13] = oldsn
					}
					h := d[m-1] * cs
					d[m-1] = h * oldcs
					e[m-2] = h * oldsn
					qv.push(l2, work[:cnt], work[nm1:nm1+cnt], true)
					qc.push(l2, work[nm12:nm12+cnt], work[nm13:nm13+cnt], true)
					if math.Abs(e[m-2]) < thresh {
						e[m-2] = 0
					}
				} else {
					cs := 1.0
					oldcs := 1.0
					var sn, r, oldsn float64
					for i := m - 1; i >= l2+1; i-- {
						cs, sn, r = impl.Dlartg(d[i]*cs, e[i-1])
						if i < m-1 {
							e[i] = oldsn * r
						}
						oldcs, oldsn, d[i] = impl.Dlartg(oldcs*r, d[i-1]*sn)
						work[i-l2-1] = cs
						work[i-l2+nm1-1] = -sn
						work[i-l2+nm12-1] = oldcs
						work[i-l2+nm13-1] = -oldsn
					}
					h := d[l2] * cs
					d[l2] = h * oldcs
					e[l2] = h * oldsn
					qv.push(l2, work[nm12:nm12+cnt], work[nm13:nm13+cnt], false)
					qc.push(l2, work[:cnt], work[nm1:nm1+cnt], false)
					if math.Abs(e[l2]) <= thresh {
						e[l2] = 0
					}
				}
			} else {
				if idir == 1 {
					f := (math.Abs(d[l2]) - shift) * (math.Copysign(1, d[l2]) + shift/d[l2])
					g := e[l2]
					var cosl, sinl float64
					for i := l2; i < m-1; i++ {
						cosr, sinr, r := impl.Dlartg(f, g)
						if i > l2 {
							e[i-1] = r
						}
						f = cosr*d[i] + sinr*e[i]
						e[i] = cosr*e[i] - sinr*d[i]
						g = sinr * d[i+1]
						d[i+1] *= cosr
						cosl, sinl, r = impl.Dlartg(f, g)
						d[i] = r
						f = cosl*e[i] + sinl*d[i+1]
						d[i+1] = cosl*d[i+1] - sinl*e[i]
						if i < m-2 {
							g = sinl * e[i+1]
							e[i+1] = cosl * e[i+1]
						}
						work[i-l2] = cosr
						work[i-l2+nm1] = sinr
						work[i-l2+nm12] = cosl
						work[i-l2+nm13] = sinl
					}
					e[m-2] = f
					qv.push(l2, work[:cnt], work[nm1:nm1+cnt], true)
					qc.push(l2, work[nm12:nm12+cnt], work[nm13:nm13+cnt], true)
					if math.Abs(e[m-2]) <= thresh {
						e[m-2] = 0
					}
				} else {
					f := (math.Abs(d[m-1]) - shift) * (math.Copysign(1, d[m-1]) + shift/d[m-1])
					g := e[m-2]
					for i := m - 1; i > l2; i-- {
						cosr, sinr, r := impl.Dlartg(f, g)
						if i < m-1 {
							e[i] = r
						}
						f = cosr*d[i] + sinr*e[i-1]
						e[i-1] = cosr*e[i-1] - sinr*d[i]
						g = sinr * d[i-1]
						d[i-1] *= cosr
						cosl, sinl, r := impl.Dlartg(f, g)
						d[i] = r
						f = cosl*e[i-1] + sinl*d[i-1]
						d[i-1] = cosl*d[i-1] - sinl*e[i-1]
						if i > l2+1 {
							g = sinl * e[i-2]
							e[i-2] *= cosl
						}
						work[i-l2-1] = cosr
						work[i-l2+nm1-1] = -sinr
						work[i-l2+nm12-1] = cosl
						work[i-l2+nm13-1] = -sinl
					}
					e[l2] = f
					if math.Abs(e[l2]) <= thresh {
						e[l2] = 0
					}
					qv.push(l2, work[nm12:nm12+cnt], work[nm13:nm13+cnt], false)
					qc.push(l2, work[:cnt], work[nm1:nm1+cnt], false)
				}
			}
		}
	}
	flushRotations(qv, qc)

	// Make the singular values non-negative.
	for i := range n {
		if d[i] < 0 {
			d[i] = -d[i]
			row := vt[i*ldvt : i*ldvt+ncvt]
			for j := range row {
				row[j] = -row[j]
			}
		}
	}
	// Sort into decreasing order (selection sort, as DBDSQR: at most n-1
	// swaps of vector rows).
	for i := 0; i < n-1; i++ {
		isub := 0
		smin := d[0]
		for j := 1; j < n-i; j++ {
			if d[j] <= smin {
				isub = j
				smin = d[j]
			}
		}
		if isub != n-i-1 {
			d[isub] = d[n-i-1]
			d[n-i-1] = smin
			swapRows(vt, ldvt, ncvt, isub, n-i-1)
			swapRows(c, ldc, ncc, isub, n-i-1)
		}
	}
	for i := range n - 1 {
		if e[i] != 0 {
			return false
		}
	}
	return true
}

func swapRows(a []float64, ld, cols, i, j int) {
	if cols == 0 {
		return
	}
	x := a[i*ld : i*ld+cols]
	y := a[j*ld : j*ld+cols]
	for k := range x {
		x[k], y[k] = y[k], x[k]
	}
}
