package merge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	_ "github.com/wtool/wtool/tensors/linalg" // fast GEMM kernels for gonum
)

// DefaultRegMeanAlpha is the default scale of the Gram matrices'
// off-diagonal entries in a RegMean merge. The RegMean paper (Jin et al.,
// 2023) merges with G~ = alpha G + (1 - alpha) diag(G), alpha < 1: with
// alpha = 1 the solution fits the calibration data exactly in the
// directions the data spans and, in the directions no model's data spans
// (fewer calibration samples than input features, dead features), falls
// back to the plain average through a small ridge toward it. The diagonal
// share (1 - alpha) regularises every direction toward a feature-weighted
// average instead; how close that is to the plain average depends on the
// features (near for isotropic ones; about half the average's norm away for
// a ViT classifier's LayerNorm features in wtool's conformance test).
const DefaultRegMeanAlpha = 0.9

// RegMean returns the RegMean merge (Jin et al., 2023) of Linear layers that
// see inputs with Gram matrices grams[i] (in x in, row-major, float64):
// W* = (sum_i W_i G_i)(sum_i G_i)^-1, the W minimising
// sum_i ||W X_i - W_i X_i||^2. ws[i] are the layers' weights (out x in,
// row-major, the layer's own orientation). alpha in (0, 1] scales the Gram
// matrices' off-diagonal entries (1 leaves them; see DefaultRegMeanAlpha).
// ridge > 0 regularises the solution toward the plain average of the ws with
// weight ridge * mean(diag) (W* = (sum_i W_i G_i + r W_avg)(sum_i G_i + r I)^-1);
// with ridge 0 a small one (from 1e-8) is used only if the sum is singular,
// so that directions no Gram matrix sees take the average, never zero.
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
	// the plain average, which a ridge pulls toward
	avgT := mat.NewDense(in, out, nil)
	for k := range ws {
		avgT.Add(avgT, mat.NewDense(out, in, ws[k]).T())
	}
	avgT.Scale(1/float64(len(ws)), avgT)
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
		b := rhs
		if r > 0 {
			var br mat.Dense
			br.Scale(r*meanDiag, avgT)
			br.Add(&br, rhs)
			b = &br
		}
		var x mat.Dense
		if err := ch.SolveTo(&x, b); err != nil {
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

// regmeanState holds the statistics of a RegMean merge, what the models'
// modules are, and the solutions of modules whose weight and bias are
// written separately.
type regmeanState struct {
	files []*stats.File  // per model, when read from files
	mem   []*stats.Stats // per model, when computed with the MLP engine
	arch  *arch.Arch     // the models' architecture: which weights are Linear/Conv1D/conv, in which orientation
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
	a, err := arch.Open(j.models[0])
	if err != nil {
		return nil, err
	}
	r.arch = a
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
	} else {
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
	}
	if err := r.notes(j); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// regmeanModule reports whether RegMean merges the module: a Linear, a
// Conv1D or a convolution (on unfolded patches), whose inputs the
// statistics describe.
func regmeanModule(m *arch.Module) bool {
	return m.Kind == arch.Linear || m.Kind == arch.Conv1D || m.Kind == arch.Conv
}

// notes says, once and in module order, which alpha is used and which
// modules' Gram matrices are rank-deficient (fewer calibration samples than
// input features): there RegMean relies on alpha < 1.
func (r *regmeanState) notes(j *job) error {
	alpha := j.p.Alpha
	if alpha == 0 {
		alpha = DefaultRegMeanAlpha
		j.report.Notes = append(j.report.Notes, fmt.Sprintf("regmean: off-diagonal Gram entries scaled by alpha = %g (the default; --alpha 1 for the unscaled solution)", alpha))
	}
	var short []string
	for _, m := range r.arch.Modules {
		if !regmeanModule(m) || !r.hasAll(m.Name) {
			continue
		}
		dim := m.InFeatures + btoi(m.Bias() != nil)
		for i := range j.models {
			n, err := r.count(i, m.Name)
			if err != nil {
				return err
			}
			if n < int64(dim) {
				short = append(short, fmt.Sprintf("%s (model %d: %d samples for %d features)", m.Name, i+1, n, dim))
				break
			}
		}
	}
	if len(short) > 0 {
		shown := short
		if len(shown) > 4 {
			shown = append(slices.Clone(shown[:4]), fmt.Sprintf("... %d modules in all", len(short)))
		}
		msg := fmt.Sprintf("regmean: warning: the Gram matrix of %d module(s) has rank below its size: %s", len(short), strings.Join(shown, ", "))
		if alpha >= 1 {
			msg += "; the directions the calibration data never saw take the plain average"
		} else {
			msg += fmt.Sprintf("; alpha = %g pulls the directions the calibration data never saw toward the feature-weighted average", alpha)
		}
		j.report.Notes = append(j.report.Notes, msg)
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (r *regmeanState) close() {
	for _, f := range r.files {
		f.Close()
	}
}

func (r *regmeanState) hasAll(name string) bool {
	for i := range max(len(r.mem), len(r.files)) {
		if !r.has(i, name) {
			return false
		}
	}
	return true
}

func (r *regmeanState) has(i int, name string) bool {
	if r.mem != nil {
		return r.mem[i].Module(name) != nil
	}
	return r.files[i].Has(name)
}

func (r *regmeanState) count(i int, name string) (int64, error) {
	if r.mem != nil {
		return r.mem[i].Module(name).Count, nil
	}
	return r.files[i].Count(name)
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

// compute merges one tensor: the weights (and biases) of Linear, Conv1D and
// convolution modules with statistics by RegMean, in each module's own
// orientation [out, in]; everything else by the weighted average.
func (r *regmeanState) compute(j *job, name string, xs [][]float32, weights []float64, out []float32) error {
	p, ok := r.arch.Param(name)
	if !ok || !regmeanModule(p.Module) || (p.Name != "weight" && p.Name != "bias") || !r.hasAll(p.Module.Name) {
		return Linear(out, xs, weights, true) // no statistics, or not a Linear-like module: plain average
	}
	mod := p.Module
	hasBias := mod.Bias() != nil
	r.mu.Lock()
	s, ok := r.sol[mod.Name]
	if !ok {
		s = &solution{parts: 1 + btoi(hasBias)}
		r.sol[mod.Name] = s
	}
	s.parts--
	if s.parts == 0 {
		delete(r.sol, mod.Name)
	}
	r.mu.Unlock()
	s.once.Do(func() { s.w, s.b, s.err = r.solve(j, mod, weights) })
	if s.err != nil {
		return fmt.Errorf("module %q: %w", mod.Name, s.err)
	}
	if p.Name == "weight" {
		copy(out, s.w)
	} else {
		copy(out, s.b)
	}
	return nil
}

// solve computes a module's RegMean weight (in its stored layout) and bias.
func (r *regmeanState) solve(j *job, mod *arch.Module, weights []float64) ([]float32, []float32, error) {
	outDim, inDim := mod.MatrixShape()
	hasBias := mod.Bias() != nil
	d := inDim
	if hasBias {
		d++
	}
	// W_aug = [W b] against the augmented Gram [[G, s], [s^T, n]]: the bias
	// is the weight of a constant input 1.
	var wsAug, grams [][]float64
	for i := range j.models {
		s, _, err := r.module(i, mod.Name)
		if err != nil {
			return nil, nil, err
		}
		if s.Dim != inDim {
			return nil, nil, fmt.Errorf("statistics have %d input features, the %s weight has %d", s.Dim, mod.Kind, inDim)
		}
		stored, err := j.floats(i, mod.Weight().Tensor)
		if err != nil {
			return nil, nil, err
		}
		wv, err := arch.ToMatrix(mod, stored) // [out, in]
		if err != nil {
			return nil, nil, err
		}
		var bv []float32
		if hasBias {
			if bv, err = j.floats(i, mod.Bias().Tensor); err != nil {
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
		alpha = DefaultRegMeanAlpha
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
	stored, err := arch.FromMatrix(mod, w)
	return stored, b, err
}
