package merge

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/stats"
)

// The kinds of a merged element (a unit of a partially merged group, or
// one index of an axis no group permutes).
const (
	kindMerged = iota // the average of A's unit a and B's unit b
	kindA             // A's unit a alone
	kindB             // B's unit b alone
	kindShared        // an unpermuted index: the same element in both models
)

// elem is one element of a merged axis: its kind and where it comes from
// in A and in B (-1 where absent).
type elem struct {
	kind uint8
	a, b int32
}

// refitProblem is one module's masked least-squares problem. The module
// maps input features x (d of them; a convolution's unfolded patch) to
// outputs W x + b. Rows are the merged module's outputs, Cols its input
// features, both in the merged layout; WA, WB are the source weights as
// [out][d] row-major matrices in the statistics' feature order, BA, BB the
// biases (nil without).
type refitProblem struct {
	St         *stats.Module
	Rows, Cols []elem
	WA, WB     []float32
	BA, BB     []float32
	Ridge      float64
	// Scratch, if set, lends the d x d work matrices, reused from one
	// module to the next (nil: allocated for this problem).
	Scratch *refitScratch
}

// refitScratch holds the refit's largest work matrices between modules:
// the normal matrix and the one factored in place. Their contents are
// undefined between uses; only the upper triangles are read.
type refitScratch struct{ zz, chol []float64 }

// take returns n values of *buf, growing it when needed.
func take(buf *[]float64, n int) []float64 {
	if cap(*buf) < n {
		*buf = make([]float64, n)
	}
	return (*buf)[:n]
}

// term is one source feature of a merged feature: coefficient c times
// entry i of v = [x_A; x_B; 1].
type term struct {
	i int
	c float64
}

// refitSolve solves the masked least-squares problem in closed form
// (PLeaS's step 3). With v = [x_A; x_B; 1] the joint input of the two
// source modules on the same samples and M = E[v v^T] (the joint second
// moments), the merged input is z = P v ([merged pairs averaged | A-only |
// B-only], shared features as they are) and the target t = Q v (the
// source modules' outputs, pair-averaged for merged rows), so the normal
// equations of min E||W z + b - t||^2 need only P M P^T and P M Q^T. A-only
// rows take no B-only input and B-only rows no A-only input: one solve per
// row kind over the columns it may read. It returns the merged weight
// [len(Rows)][len(Cols)] and bias (nil without).
func refitSolve(ctx context.Context, p refitProblem) ([]float32, []float32, error) {
	st := p.St
	d := st.Dim
	if st.Cross == nil || st.GramB == nil {
		return nil, nil, fmt.Errorf("joint statistics needed (statistics of the two models on the same data)")
	}
	if st.Count == 0 {
		return nil, nil, fmt.Errorf("no samples in the statistics")
	}
	outA, outB := len(p.WA)/max(d, 1), len(p.WB)/max(d, 1)
	if outA*d != len(p.WA) || outB*d != len(p.WB) {
		return nil, nil, fmt.Errorf("weights of %d and %d values are not [out, %d] matrices", len(p.WA), len(p.WB), d)
	}
	bias := p.BA != nil
	n := float64(st.Count)
	one := 2 * d // index of the constant 1 in v
	// mv returns M[i][j].
	mv := func(i, j int) float64 {
		switch {
		case i == one && j == one:
			return 1
		case i == one:
			i, j = j, i
			fallthrough
		case j == one:
			if i < d {
				return st.Sum[i] / n
			}
			return st.SumB[i-d] / n
		case i < d && j < d:
			return st.Gram[i*d+j] / n
		case i >= d && j >= d:
			return st.GramB[(i-d)*d+j-d] / n
		case i < d:
			return st.Cross[i*d+j-d] / n
		default:
			return st.Cross[j*d+i-d] / n
		}
	}
	// the merged input features as terms of v
	zt := make([][]term, 0, len(p.Cols)+1)
	for ci, c := range p.Cols {
		switch c.kind {
		case kindMerged:
			zt = append(zt, []term{{int(c.a), 0.5}, {d + int(c.b), 0.5}})
		case kindA:
			zt = append(zt, []term{{int(c.a), 1}})
		case kindB:
			zt = append(zt, []term{{d + int(c.b), 1}})
		case kindShared:
			zt = append(zt, []term{{int(c.a), 0.5}, {d + int(c.b), 0.5}})
		default:
			return nil, nil, fmt.Errorf("input feature %d: bad kind %d", ci, c.kind)
		}
		for _, t := range zt[len(zt)-1] {
			if t.i < 0 || t.i >= 2*d {
				return nil, nil, fmt.Errorf("input feature %d maps outside the %d statistics features", ci, d)
			}
		}
	}
	nin := len(zt)
	if bias {
		zt = append(zt, []term{{one, 1}})
	}
	zdim := len(zt)
	// ZZ = P M P^T, its upper triangle by tiles: a merged feature reads
	// the cross Gram both ways, and tiles keep its transposed reads in cache
	sc := p.Scratch
	if sc == nil {
		sc = &refitScratch{}
	}
	zzRaw := take(&sc.zz, zdim*zdim) // the lower triangle is never read
	zz := mat.NewSymDense(zdim, zzRaw)
	const tile = 64
	for r0 := 0; r0 < zdim; r0 += tile {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		r1 := min(r0+tile, zdim)
		for s0 := r0; s0 < zdim; s0 += tile {
			s1 := min(s0+tile, zdim)
			for r := r0; r < r1; r++ {
				row := zzRaw[r*zdim : (r+1)*zdim]
				for s := max(s0, r); s < s1; s++ {
					var v float64
					for _, tr := range zt[r] {
						for _, ts := range zt[s] {
							v += tr.c * ts.c * mv(tr.i, ts.i)
						}
					}
					row[s] = v
				}
			}
		}
	}
	// E[v_i (W_side x_side)_o] for i < 2d: H_side = M[:, side's x] W_side^T,
	// from the sums in place (Gram, GramB, Cross), scaled by 1/n
	wmat := func(w []float32, out int) *mat.Dense {
		m := mat.NewDense(out, d, nil)
		for k, x := range w {
			m.RawMatrix().Data[k] = float64(x)
		}
		return m
	}
	gram, gramB, cross := mat.NewDense(d, d, st.Gram), mat.NewDense(d, d, st.GramB), mat.NewDense(d, d, st.Cross)
	var hAa, hAb, hBa, hBb mat.Dense // rows: A's features (a) or B's (b)
	if outA > 0 {
		wa := wmat(p.WA, outA)
		hAa.Mul(gram, wa.T())
		hAb.Mul(cross.T(), wa.T())
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if outB > 0 {
		wb := wmat(p.WB, outB)
		hBa.Mul(cross, wb.T())
		hBb.Mul(gramB, wb.T())
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	// hv returns E[v_i (W_side x_side)_o] for i < 2d
	hv := func(side, i, o int) float64 {
		switch {
		case side == 0 && i < d:
			return hAa.At(i, o) / n
		case side == 0:
			return hAb.At(i-d, o) / n
		case i < d:
			return hBa.At(i, o) / n
		default:
			return hBb.At(i-d, o) / n
		}
	}
	// ZT[r][o] = E[z_r t_o]
	type src struct {
		side, row int
		c         float64
	}
	rowTerms := func(e elem) []src {
		switch e.kind {
		case kindA:
			return []src{{0, int(e.a), 1}}
		case kindB:
			return []src{{1, int(e.b), 1}}
		default:
			return []src{{0, int(e.a), 0.5}, {1, int(e.b), 0.5}}
		}
	}
	for ri, e := range p.Rows {
		for _, s := range rowTerms(e) {
			if (s.side == 0 && (s.row < 0 || s.row >= outA)) || (s.side == 1 && (s.row < 0 || s.row >= outB)) {
				return nil, nil, fmt.Errorf("output %d maps outside the source weights", ri)
			}
		}
	}
	zT := mat.NewDense(zdim, len(p.Rows), nil)
	for r, ts := range zt {
		for o, e := range p.Rows {
			var v float64
			for _, t := range ts {
				mean := mv(t.i, one)
				for _, s := range rowTerms(e) {
					var x float64
					w, b := p.WA, p.BA
					if s.side == 1 {
						w, b = p.WB, p.BB
					}
					if t.i == one { // E[(W x + b)_o] = W mean + b
						mu := st.Sum
						if s.side == 1 {
							mu = st.SumB
						}
						for j := range d {
							x += float64(w[s.row*d+j]) * mu[j] / n
						}
					} else {
						x = hv(s.side, t.i, s.row)
					}
					if bias {
						x += mean * float64(b[s.row])
					}
					v += t.c * s.c * x
				}
			}
			zT.Set(r, o, v)
		}
	}
	w := make([]float32, len(p.Rows)*nin)
	var b []float32
	if bias {
		b = make([]float32, len(p.Rows))
	}
	// one solve per row kind, over the columns that kind may read
	for _, block := range [][]uint8{{kindMerged, kindShared}, {kindA}, {kindB}} {
		var rows []int
		for r, e := range p.Rows {
			if e.kind == block[0] || (len(block) > 1 && e.kind == block[1]) {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		var cols []int
		for c, e := range p.Cols {
			if (block[0] == kindA && e.kind == kindB) || (block[0] == kindB && e.kind == kindA) {
				continue
			}
			cols = append(cols, c)
		}
		if bias {
			cols = append(cols, nin)
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		x, err := solveMasked(zz, zT, cols, rows, p.Ridge, bias, &sc.chol)
		if err != nil {
			return nil, nil, err
		}
		for ri, r := range rows {
			for ci, c := range cols {
				if c == nin {
					b[r] = float32(x.At(ci, ri))
				} else {
					w[r*nin+c] = float32(x.At(ci, ri))
				}
			}
		}
	}
	return w, b, nil
}

// solveMasked solves (ZZ[cols,cols] + ridge) X = ZT[cols, rows] by
// Cholesky, the ridge relative to the mean diagonal and sparing the bias
// column (the last of cols when bias); a singular system is retried with
// ten times the ridge, up to 1. The system is factored in *buf (grown
// when needed).
func solveMasked(zz *mat.SymDense, zt *mat.Dense, cols, rows []int, ridge float64, bias bool, buf *[]float64) (*mat.Dense, error) {
	k := len(cols)
	nb := k
	if bias {
		nb = k - 1
	}
	src := zz.RawSymmetric()
	var meanDiag float64
	for i := range nb {
		meanDiag += src.Data[cols[i]*src.Stride+cols[i]]
	}
	meanDiag /= float64(max(nb, 1))
	if meanDiag == 0 {
		meanDiag = 1
	}
	rhs := mat.NewDense(k, len(rows), nil)
	for i, ci := range cols {
		row := rhs.RawRowView(i)
		for j, rj := range rows {
			row[j] = zt.At(ci, rj)
		}
	}
	if ridge <= 0 {
		ridge = 1e-6
	}
	data := take(buf, k*k) // only the upper triangle is written and read
	for r := ridge; ; r *= 10 {
		// the upper triangle of ZZ[cols, cols] + ridge (row-major)
		for i, ci := range cols {
			srow := src.Data[ci*src.Stride:]
			drow := data[i*k:]
			for j := i; j < k; j++ {
				cj := cols[j]
				if cj >= ci {
					drow[j] = srow[cj]
				} else {
					drow[j] = src.Data[cj*src.Stride+ci]
				}
			}
			if i < nb {
				drow[i] += r * meanDiag
			}
		}
		// the factor in place: mat.Cholesky would copy the matrix and
		// estimate its condition number, which nothing here reads
		if _, ok := lapack64.Potrf(blas64.Symmetric{N: k, Stride: k, Uplo: blas.Upper, Data: data}); ok {
			cholSolve(blas64.Triangular{N: k, Stride: k, Uplo: blas.Upper, Diag: blas.NonUnit, Data: data}, rhs.RawMatrix())
			return rhs, nil
		}
		if !(r < 1) {
			break
		}
	}
	return nil, fmt.Errorf("least-squares system is singular even with a ridge")
}

// cholSolve solves U^T U X = B in place (B becomes X) for the upper
// Cholesky factor U, by blocks of rows: the updates are matrix products
// (the fast GEMM), the triangular solves small.
func cholSolve(u blas64.Triangular, b blas64.General) {
	const nb = 128
	k := u.N
	sub := func(g blas64.General, r0, r1 int) blas64.General {
		return blas64.General{Rows: r1 - r0, Cols: g.Cols, Stride: g.Stride, Data: g.Data[r0*g.Stride:]}
	}
	block := func(r0, c0, r1, c1 int) blas64.General {
		return blas64.General{Rows: r1 - r0, Cols: c1 - c0, Stride: u.Stride, Data: u.Data[r0*u.Stride+c0:]}
	}
	diag := func(i0, i1 int) blas64.Triangular {
		return blas64.Triangular{Uplo: blas.Upper, Diag: blas.NonUnit, N: i1 - i0, Stride: u.Stride, Data: u.Data[i0*u.Stride+i0:]}
	}
	// forward: U^T Y = B
	for i0 := 0; i0 < k; i0 += nb {
		i1 := min(i0+nb, k)
		bi := sub(b, i0, i1)
		if i0 > 0 {
			blas64.Gemm(blas.Trans, blas.NoTrans, -1, block(0, i0, i0, i1), sub(b, 0, i0), 1, bi)
		}
		blas64.Trsm(blas.Left, blas.Trans, 1, diag(i0, i1), bi)
	}
	// backward: U X = Y
	for i1 := k; i1 > 0; i1 -= nb {
		i0 := max(i1-nb, 0)
		bi := sub(b, i0, i1)
		if i1 < k {
			blas64.Gemm(blas.NoTrans, blas.NoTrans, -1, block(i0, i1, i1, k), sub(b, i1, k), 1, bi)
		}
		blas64.Trsm(blas.Left, blas.NoTrans, 1, diag(i0, i1), bi)
	}
}
