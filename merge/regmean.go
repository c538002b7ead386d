package merge

import (
	"context"
	"fmt"
	_ "github.com/wtool/wtool/tensors/linalg" // fast GEMM kernels for gonum
	"strings"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
)

// RegMean returns the RegMean merge (Jin et al., 2023) of Linear layers that
// see inputs with Gram matrices grams[i] (in x in, row-major, float64):
// W* = (sum_i W_i G_i)(sum_i G_i)^-1, the W minimising
// sum_i ||W X_i - W_i X_i||^2. ws[i] are the layers' weights (out x in,
// row-major). alpha in (0, 1] scales the Gram matrices' off-diagonal entries
// (1 leaves them). ridge > 0 adds ridge * mean(diag) to the diagonal of the
// sum; with ridge 0 it is added (1e-8) only if the sum is singular.
func RegMean(ws [][]float64, grams [][]float64, out, in int, alpha, ridge float64) ([]float64, error) {
	if len(ws) == 0 || len(ws) != len(grams) {
		return nil, fmt.Errorf("regmean: %d weights, %d Gram matrices", len(ws), len(grams))
	}
	if alpha <= 0 || alpha > 1 {
		return nil, fmt.Errorf("regmean: alpha %g must be in (0, 1]", alpha)
	}
	sum := mat.NewSymDense(in, nil)
	rhs := mat.NewDense(in, out, nil) // (sum_i W_i G_i)^T = sum_i G_i W_i^T
	for k := range ws {
		if len(ws[k]) != out*in || len(grams[k]) != in*in {
			return nil, fmt.Errorf("regmean: model %d: %d weights, %d Gram entries for %d x %d", k, len(ws[k]), len(grams[k]), out, in)
		}
		g := mat.NewDense(in, in, scaleOffDiagonal(grams[k], in, alpha))
		for r := range in {
			for c := r; c < in; c++ {
				sum.SetSym(r, c, sum.At(r, c)+g.At(r, c))
			}
		}
		var t mat.Dense
		t.Mul(g, mat.NewDense(out, in, ws[k]).T())
		rhs.Add(rhs, &t)
	}
	var meanDiag float64
	for i := range in {
		meanDiag += sum.At(i, i)
	}
	meanDiag /= float64(in)
	if meanDiag <= 0 {
		return nil, fmt.Errorf("regmean: the Gram matrices are zero")
	}
	solve := func(r float64) (*mat.Dense, bool) {
		a := mat.NewSymDense(in, nil)
		a.CopySym(sum)
		for i := range in {
			a.SetSym(i, i, a.At(i, i)+r*meanDiag)
		}
		var ch mat.Cholesky
		if !ch.Factorize(a) {
			return nil, false
		}
		var x mat.Dense
		if err := ch.SolveTo(&x, rhs); err != nil {
			return nil, false
		}
		return &x, true
	}
	x, ok := solve(ridge)
	for r := 1e-8; !ok && r < 1; r *= 100 {
		x, ok = solve(ridge + r)
	}
	if !ok {
		return nil, fmt.Errorf("regmean: the summed Gram matrix is not positive definite even with a ridge")
	}
	res := make([]float64, out*in)
	for o := range out {
		for i := range in {
			res[o*in+i] = x.At(i, o)
		}
	}
	return res, nil
}

func scaleOffDiagonal(g []float64, n int, alpha float64) []float64 {
	out := make([]float64, len(g))
	for r := range n {
		for c := range n {
			v := g[r*n+c]
			if r != c {
				v *= alpha
			}
			out[r*n+c] = v
		}
	}
	return out
}

// regmeanState holds the statistics of a RegMean merge and the solutions
// of modules whose weight and bias are written separately.
type regmeanState struct {
	files []*stats.File  // per model, when read from files
	mem   []*stats.Stats // per model, when computed with the MLP engine
	mu    sync.Mutex
	sol   map[string]*solution // per module, until weight and bias are written
}

// solution is one module's merged weight and bias, computed once.
type solution struct {
	once  sync.Once
	w, b  []float32
	err   error
	parts int // tensors of the module still to be written
}

func newRegmean(ctx context.Context, j *job) (*regmeanState, error) {
	r := &regmeanState{sol: map[string]*solution{}}
	p := j.p
	if p.Calib != "" {
		in, err := mlp.OpenInputs(p.Calib, p.CalibKey)
		if err != nil {
			return nil, err
		}
		defer in.Close()
		act, err := mlp.ParseActivation(p.Act)
		if err != nil {
			return nil, err
		}
		for _, m := range j.models {
			n, err := mlp.Load(m, p.Layers, act)
			if err != nil {
				return nil, err
			}
			s, err := mlp.CollectStats(ctx, []*mlp.Network{n}, in, mlp.Options{})
			if err != nil {
				return nil, err
			}
			r.mem = append(r.mem, s)
		}
		return r, nil
	}
	for _, mi := range p.Models {
		f, err := stats.Open(mi.Stats)
		if err != nil {
			r.close()
			return nil, err
		}
		if f.Kind != stats.Single {
			r.close()
			return nil, fmt.Errorf("%s: regmean needs each model's own (single) statistics, not %s ones", mi.Stats, f.Kind)
		}
		r.files = append(r.files, f)
	}
	return r, nil
}

func (r *regmeanState) close() {
	for _, f := range r.files {
		f.Close()
	}
}

func (r *regmeanState) has(i int, name string) bool {
	if r.mem != nil {
		return r.mem[i].Module(name) != nil
	}
	return r.files[i].Has(name)
}

func (r *regmeanState) module(i int, name string) (*stats.Module, bool, error) {
	if r.mem != nil {
		m := r.mem[i].Module(name)
		return m, m != nil, nil
	}
	if !r.files[i].Has(name) {
		return nil, false, nil
	}
	m, err := r.files[i].Module(name)
	return m, err == nil, err
}

// compute merges one tensor: Linear weights (and their biases) of modules
// with statistics by RegMean, everything else by the weighted average.
func (r *regmeanState) compute(j *job, name string, xs [][]float32, weights []float64, out []float32) error {
	mod, isWeight := strings.CutSuffix(name, ".weight")
	isBias := false
	if !isWeight {
		mod, isBias = strings.CutSuffix(name, ".bias")
	}
	info, _ := j.models[0].Info(mod + ".weight")
	if (!isWeight && !isBias) || len(info.Shape) != 2 {
		return Linear(out, xs, weights, true)
	}
	for i := range j.models {
		if !r.has(i, mod) {
			return Linear(out, xs, weights, true) // no statistics: plain average
		}
	}
	hasBias := j.models[0].Has(mod + ".bias")
	r.mu.Lock()
	s, ok := r.sol[mod]
	if !ok {
		s = &solution{parts: 1}
		if hasBias {
			s.parts = 2
		}
		r.sol[mod] = s
	}
	s.parts--
	if s.parts == 0 {
		delete(r.sol, mod)
	}
	r.mu.Unlock()
	s.once.Do(func() { s.w, s.b, s.err = r.solve(j, mod, info.Shape, hasBias, weights) })
	if s.err != nil {
		return fmt.Errorf("module %q: %w", mod, s.err)
	}
	if isWeight {
		copy(out, s.w)
	} else {
		copy(out, s.b)
	}
	return nil
}

// solve computes a module's RegMean weight and bias.
func (r *regmeanState) solve(j *job, mod string, shape []int64, hasBias bool, weights []float64) ([]float32, []float32, error) {
	outDim, inDim := int(shape[0]), int(shape[1])
	d := inDim
	if hasBias {
		d++
	}
	// W_aug = [W b] against the augmented Gram [[G, s], [s^T, n]]: the bias
	// is the weight of a constant input 1.
	var wsAug, grams [][]float64
	for i := range j.models {
		s, _, err := r.module(i, mod)
		if err != nil {
			return nil, nil, err
		}
		if s.Dim != inDim {
			return nil, nil, fmt.Errorf("statistics have %d input features, the weight has %d", s.Dim, inDim)
		}
		wv, err := j.floats(i, mod+".weight")
		if err != nil {
			return nil, nil, err
		}
		var bv []float32
		if hasBias {
			if bv, err = j.floats(i, mod+".bias"); err != nil {
				return nil, nil, err
			}
		}
		w := make([]float64, outDim*d)
		for o := range outDim {
			for c := range inDim {
				w[o*d+c] = float64(wv[o*inDim+c])
			}
			if hasBias {
				w[o*d+inDim] = float64(bv[o])
			}
		}
		g := make([]float64, d*d)
		for a := range inDim {
			for b := range inDim {
				g[a*d+b] = weights[i] * s.Gram[a*inDim+b]
			}
			if hasBias {
				g[a*d+inDim] = weights[i] * s.Sum[a]
				g[inDim*d+a] = weights[i] * s.Sum[a]
			}
		}
		if hasBias {
			g[inDim*d+inDim] = weights[i] * float64(s.Count)
		}
		wsAug = append(wsAug, w)
		grams = append(grams, g)
	}
	alpha := j.p.Alpha
	if alpha == 0 {
		alpha = 1
	}
	sol, err := RegMean(wsAug, grams, outDim, d, alpha, j.p.Ridge)
	if err != nil {
		return nil, nil, err
	}
	w := make([]float32, outDim*inDim)
	var b []float32
	for o := range outDim {
		for c := range inDim {
			w[o*inDim+c] = float32(sol[o*d+c])
		}
		if hasBias {
			b = append(b, float32(sol[o*d+inDim]))
		}
	}
	return w, b, nil
}
