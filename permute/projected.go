package permute

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/io/arch"
)

// projectedScores returns the scores of a group whose space no statistics
// entry records but a linear projection writes (the query and key
// features of attention): the correlation of the projections' outputs,
// computed from their weights and the joint statistics of their input,
// Cov(W_A x_A, W_B x_B) = W_A Cov(x_A, x_B) W_B^T (biases do not change
// covariances), averaged over the group's spaces and the features each
// unit has there. The names say which projections were used (none: every
// score 0).
func (s *Spec) projectedScores(ctx context.Context, g string, js JointStats, models [2]Source) ([]float64, []string, error) {
	as := s.arch
	n := s.Groups[g]
	sc := make([]float64, n*n)
	var names []string
	for _, space := range as.Info[g].Spaces {
		ax, ok := as.spaceAxis[space]
		if !ok || ax.Group != g {
			continue
		}
		sp, _ := as.Arch.Space(space)
		for _, m := range as.Arch.Writers(space) {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			w := m.Weight()
			if w == nil || (m.Kind != arch.Linear && m.Kind != arch.Conv1D) || !js.Has(m.Name) {
				continue
			}
			corr, err := projectedCorrelation(as.Arch, m, space, sp.Size, js, models)
			if err != nil {
				return nil, nil, err
			}
			u := s.segments(ax, sp.Size)[0]
			pos := u.Positions(n)
			per := u.PerUnit()
			q := sp.Size
			for i := range n {
				for j := range n {
					c := 0.0
					for t := range per {
						c += corr[pos[i*per+t]*q+pos[j*per+t]]
					}
					sc[i*n+j] += c / float64(per)
				}
			}
			names = append(names, m.Name+"→"+space)
		}
	}
	if t := len(names); t > 1 {
		for i := range sc {
			sc[i] /= float64(t)
		}
	}
	return sc, names, nil
}

// projectedCorrelation is the correlation matrix (size x size) of model A's
// and model B's features of a space that module m writes (alone, or as a
// part of its fused output), from m's weights and its input's joint
// statistics.
func projectedCorrelation(a *arch.Arch, m *arch.Module, space string, size int, js JointStats, models [2]Source) ([]float64, error) {
	st, err := js.Module(m.Name)
	if err != nil {
		return nil, err
	}
	if st.Cross == nil || st.GramB == nil || st.Count == 0 {
		return nil, fmt.Errorf("module %q: joint statistics needed", m.Name)
	}
	d, cnt := st.Dim, float64(st.Count)
	// the rows of the space in the module's output
	off := 0
	if m.Out != space {
		fs, _ := a.Space(m.Out)
		for _, p := range fs.Parts {
			if p == space {
				break
			}
			ps, _ := a.Space(p)
			off += ps.Size
		}
	}
	var ws [2]*mat.Dense
	for k, src := range models {
		v, shape, err := src.Float32(m.Weight().Tensor)
		if err != nil {
			return nil, err
		}
		if len(shape) != 2 {
			return nil, fmt.Errorf("tensor %q: shape %v, want a matrix", m.Weight().Tensor, shape)
		}
		rows, cols := int(shape[0]), int(shape[1])
		w := mat.NewDense(size, d, nil)
		for r := range size {
			for c := range d {
				var x float32
				if m.Kind == arch.Conv1D { // [in, out]
					if c >= rows || off+r >= cols {
						return nil, fmt.Errorf("tensor %q: shape %v does not fit %d inputs and %d outputs at %d", m.Weight().Tensor, shape, d, size, off)
					}
					x = v[c*cols+off+r]
				} else {
					if off+r >= rows || c >= cols {
						return nil, fmt.Errorf("tensor %q: shape %v does not fit %d inputs and %d outputs at %d", m.Weight().Tensor, shape, d, size, off)
					}
					x = v[(off+r)*cols+c]
				}
				w.Set(r, c, float64(x))
			}
		}
		ws[k] = w
	}
	cov := func(g, sa, sb []float64) *mat.Dense {
		c := mat.NewDense(d, d, nil)
		for i := range d {
			for j := range d {
				c.Set(i, j, g[i*d+j]/cnt-sa[i]/cnt*sb[j]/cnt)
			}
		}
		return c
	}
	var t, cross mat.Dense
	t.Mul(ws[0], cov(st.Cross, st.Sum, st.SumB))
	cross.Mul(&t, ws[1].T())
	variance := func(w *mat.Dense, c *mat.Dense) []float64 {
		var wc mat.Dense
		wc.Mul(w, c)
		v := make([]float64, size)
		for r := range size {
			v[r] = math.Sqrt(max(mat.Dot(wc.RowView(r), w.RowView(r)), 0))
		}
		return v
	}
	sa := variance(ws[0], cov(st.Gram, st.Sum, st.Sum))
	sb := variance(ws[1], cov(st.GramB, st.SumB, st.SumB))
	out := make([]float64, size*size)
	for i := range size {
		for j := range size {
			if den := sa[i] * sb[j]; den > 0 {
				out[i*size+j] = cross.At(i, j) / den
			}
		}
	}
	return out, nil
}
