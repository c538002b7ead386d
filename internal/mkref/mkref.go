// Package mkref is a plain float64 reference implementation of mergekit's
// 20 merge methods, one tensor at a time, written from docs/mergekit.md and
// checked against the golden vectors of testdata/mergekit. It is an oracle
// for tests of wtool's streaming implementations (compare them on random
// inputs, e.g. with rapid), not a production merger: it is unoptimized and
// holds every input in memory.
//
// It follows wtool's deliberate differences (docs/mergekit.md section 4):
// breadcrumbs keeps ranks [n_bot, n) when int(gamma n) = 0, sce returns the
// base when no entry is selected, della keeps one-element rows with
// probability density, arcee_fusion uses exact quantiles, and random
// methods draw from a seeded PCG generator per model.
package mkref

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/wtool/wtool/merge/mkconfig"
)

// Rescale modes of the task-vector family (the rescale parameter).
const (
	RescaleNone    = 0 // false
	RescaleL1      = 1 // true (mergekit)
	RescaleInverse = 2 // wtool's named extension: 1/density (DARE) or 1/p (DELLA)
)

// Inputs are one tensor's inputs and resolved parameters.
type Inputs struct {
	// Shape of every tensor (C order).
	Shape []int
	// Base is the base model's tensor, nil when the merge has none. For
	// methods without a base role (linear, karcher, passthrough) put the
	// base model's tensor in Models instead.
	Base []float64
	// Models are the other inputs, in order.
	Models [][]float64
	// Global and PerModel are the resolved parameters (Resolve): booleans
	// are 1 or 0, rescale is one of the Rescale constants.
	Global   map[string]float64
	PerModel []map[string]float64
	// Seed seeds the random methods (model i draws from PCG(Seed, i)).
	Seed uint64
}

// ErrRefused wraps the errors of inputs mergekit refuses.
var ErrRefused = errors.New("refused")

func refuse(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, a...))
}

// Resolve applies mergekit's parameter rules for one tensor: a per-model
// parameter comes from the model's own values, else the global section,
// else its default; a required one missing for a model that is not the
// base model is an error. Values may be float64, int, bool or, for
// rescale, "l1", "none" or "inverse".
func Resolve(def mkconfig.MethodDef, global map[string]any, perModel []map[string]any, isBase []bool) (map[string]float64, []map[string]float64, error) {
	var conv func(name string, v any) (float64, error)
	conv = func(name string, v any) (float64, error) {
		switch x := v.(type) {
		case float64:
			return x, nil
		case int:
			return float64(x), nil
		case bool:
			if x {
				return 1, nil
			}
			return 0, nil
		case string:
			if name == "rescale" {
				switch x {
				case "l1":
					return RescaleL1, nil
				case "none":
					return RescaleNone, nil
				case "inverse":
					return RescaleInverse, nil
				}
			}
		case mkconfig.Value:
			if x.Kind == mkconfig.String {
				return conv(name, x.Str)
			}
			return x.Float()
		}
		return 0, fmt.Errorf("parameter %s: unsupported value %v", name, v)
	}
	norm := func(name string, f float64) float64 {
		if name == "rescale" && f != RescaleInverse && f != 0 {
			return RescaleL1 // truthiness
		}
		return f
	}
	g := map[string]float64{}
	for _, p := range def.Params {
		if p.PerModel {
			continue
		}
		v, ok := global[p.Name]
		switch {
		case ok:
			f, err := conv(p.Name, v)
			if err != nil {
				return nil, nil, err
			}
			g[p.Name] = norm(p.Name, f)
		case p.Required:
			return nil, nil, refuse("missing required parameter %s", p.Name)
		case p.Default != nil:
			f, _ := p.Default.Float()
			g[p.Name] = norm(p.Name, f)
		}
	}
	var pm []map[string]float64
	for i, own := range perModel {
		m := map[string]float64{}
		for _, p := range def.Params {
			if !p.PerModel {
				continue
			}
			v, ok := own[p.Name]
			if !ok {
				v, ok = global[p.Name]
			}
			switch {
			case ok:
				f, err := conv(p.Name, v)
				if err != nil {
					return nil, nil, err
				}
				m[p.Name] = f
			case p.Required && !(i < len(isBase) && isBase[i]):
				return nil, nil, refuse("missing required parameter %s for model %d", p.Name, i)
			case p.Default != nil:
				f, _ := p.Default.Float()
				m[p.Name] = f
			}
		}
		pm = append(pm, m)
	}
	return g, pm, nil
}

// Merge merges one tensor with a mergekit method.
func Merge(method string, in Inputs) ([]float64, error) {
	def, ok := mkconfig.Methods[method]
	if !ok {
		return nil, fmt.Errorf("unknown method %q", method)
	}
	n := 1
	for _, d := range in.Shape {
		n *= d
	}
	for i, x := range in.Models {
		if len(x) != n {
			return nil, fmt.Errorf("model %d has %d values, the shape %v has %d", i, len(x), in.Shape, n)
		}
	}
	if in.Base != nil && len(in.Base) != n {
		return nil, fmt.Errorf("base has %d values, the shape %v has %d", len(in.Base), in.Shape, n)
	}
	if def.Base == mkconfig.BaseRequired && in.Base == nil {
		return nil, refuse("%s needs a base model", method)
	}
	if len(in.PerModel) != len(in.Models) && len(paramNamesPerModel(def)) > 0 {
		return nil, fmt.Errorf("%d per-model parameter sets for %d models", len(in.PerModel), len(in.Models))
	}
	switch method {
	case "linear":
		return linear(in)
	case "slerp":
		return slerp(in)
	case "nuslerp":
		return nuslerp(in)
	case "multislerp":
		return multislerp(in)
	case "karcher":
		return karcher(in)
	case "passthrough":
		if len(in.Models) != 1 {
			return nil, refuse("passthrough takes exactly one model per tensor, got %d", len(in.Models))
		}
		out := slices.Clone(in.Models[0])
		if s, ok := in.PerModel[0]["scale"]; ok {
			for i := range out {
				out[i] *= s
			}
		}
		return out, nil
	case "model_stock":
		return modelStock(in)
	case "nearswap":
		return nearswap(in)
	case "ram", "ramplus_tl":
		return ram(in, method == "ramplus_tl")
	case "sce":
		return sce(in)
	case "arcee_fusion":
		return arceeFusion(in)
	}
	return taskVectors(method, in)
}

func paramNamesPerModel(def mkconfig.MethodDef) []string {
	var out []string
	for _, p := range def.Params {
		if p.PerModel {
			out = append(out, p.Name)
		}
	}
	return out
}

func norm2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func linear(in Inputs) ([]float64, error) {
	if len(in.Models) == 0 {
		return nil, refuse("no models")
	}
	out := make([]float64, len(in.Models[0]))
	var sw float64
	for i, x := range in.Models {
		w := in.PerModel[i]["weight"]
		sw += w
		for j, v := range x {
			out[j] += w * v
		}
	}
	if in.Global["normalize"] != 0 {
		for j := range out {
			out[j] /= sw
		}
	}
	return out, nil
}

func slerp(in Inputs) ([]float64, error) {
	switch len(in.Models) {
	case 0:
		return slices.Clone(in.Base), nil
	case 1:
	default:
		return nil, refuse("slerp takes exactly two models, got %d besides the base", len(in.Models))
	}
	return slerpPair(in.Global["t"], in.Base, in.Models[0]), nil
}

func slerpPair(t float64, a, b []float64) []float64 {
	out := make([]float64, len(a))
	na, nb := norm2(a), norm2(b)
	sa, sb := 1.0, 1.0
	if na > 1e-8 {
		sa = 1 / na
	}
	if nb > 1e-8 {
		sb = 1 / nb
	}
	d := dot(a, b) * sa * sb
	if math.Abs(d) > 0.9995 {
		for i := range out {
			out[i] = (1-t)*a[i] + t*b[i]
		}
		return out
	}
	th := math.Acos(d)
	s0, s1 := math.Sin((1-t)*th)/math.Sin(th), math.Sin(t*th)/math.Sin(th)
	for i := range out {
		out[i] = s0*a[i] + s1*b[i]
	}
	return out
}

// vectors returns index lists of the vectors a tensor is cut into: the
// whole tensor, the vectors along the last axis, or along the first.
func vectors(shape []int, flatten, firstAxis bool) [][]int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if flatten || len(shape) <= 1 {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return [][]int{idx}
	}
	if !firstAxis {
		last := shape[len(shape)-1]
		var out [][]int
		for r := 0; r < n; r += last {
			idx := make([]int, last)
			for j := range idx {
				idx[j] = r + j
			}
			out = append(out, idx)
		}
		return out
	}
	// vectors along axis 0: one per index of the other axes
	first := shape[0]
	stride := n / first
	var out [][]int
	for r := 0; r < stride; r++ {
		idx := make([]int, first)
		for j := range idx {
			idx[j] = j*stride + r
		}
		out = append(out, idx)
	}
	return out
}

func gather(v []float64, idx []int) []float64 {
	out := make([]float64, len(idx))
	for i, j := range idx {
		out[i] = v[j]
	}
	return out
}

func nuslerp(in Inputs) ([]float64, error) {
	if len(in.Models) == 1 && in.Base == nil {
		return slices.Clone(in.Models[0]), nil
	}
	if len(in.Models) != 2 {
		return nil, refuse("nuslerp takes exactly two models besides the base, got %d", len(in.Models))
	}
	w0, w1 := in.PerModel[0]["weight"], in.PerModel[1]["weight"]
	t := 0.5
	if math.Abs(w0+w1) >= 1e-6 {
		t = w1 / (w0 + w1)
	}
	a, b := slices.Clone(in.Models[0]), slices.Clone(in.Models[1])
	if in.Base != nil {
		for i := range a {
			a[i] -= in.Base[i]
			b[i] -= in.Base[i]
		}
	}
	out := make([]float64, len(a))
	for _, idx := range vectors(in.Shape, in.Global["nuslerp_flatten"] != 0, in.Global["nuslerp_row_wise"] != 0) {
		x, y := gather(a, idx), gather(b, idx)
		ux, uy := max(norm2(x), 1e-7), max(norm2(y), 1e-7)
		c := max(-1, min(1, dot(x, y)/(ux*uy)))
		th := math.Acos(c)
		s := math.Sin(th)
		for k, j := range idx {
			if math.Abs(s) < 1e-8 {
				out[j] = (1-t)*x[k] + t*y[k]
			} else {
				out[j] = (math.Sin((1-t)*th)*x[k] + math.Sin(t*th)*y[k]) / s
			}
		}
	}
	if in.Base != nil {
		for i := range out {
			out[i] += in.Base[i]
		}
	}
	return out, nil
}

func multislerp(in Inputs) ([]float64, error) {
	if len(in.Models) == 1 {
		return slices.Clone(in.Models[0]), nil
	}
	eps := in.Global["eps"]
	w := make([]float64, len(in.Models))
	var sw float64
	for i := range w {
		w[i] = in.PerModel[i]["weight"]
		sw += w[i]
	}
	if in.Global["normalize_weights"] != 0 {
		for i := range w {
			w[i] /= sw
		}
	}
	n := len(in.Models[0])
	X := make([][]float64, len(in.Models))
	norms := make([]float64, len(in.Models))
	m := make([]float64, n)
	for i, x := range in.Models {
		X[i] = slices.Clone(x)
		if in.Base != nil {
			for j := range X[i] {
				X[i][j] -= in.Base[j]
			}
		}
		norms[i] = norm2(X[i])
		for j, v := range X[i] {
			m[j] += w[i] * v / (norms[i] + eps)
		}
	}
	out := make([]float64, n)
	if nm := norm2(m); nm < eps {
		if len(in.Models) != 2 {
			return nil, refuse("the weighted sum of the unit vectors is zero (antipodal inputs)")
		}
		for j := range out {
			out[j] = w[0]*X[0][j] + w[1]*X[1][j]
		}
	} else {
		for j := range m {
			m[j] /= nm
		}
		tau := make([]float64, n)
		for i := range X {
			var d float64
			for j := range m {
				d += X[i][j] / (norms[i] + eps) * m[j]
			}
			for j := range tau {
				tau[j] += w[i] * (X[i][j]/(norms[i]+eps) - d*m[j])
			}
		}
		nu := norm2(tau) + eps
		var scale float64
		for i := range w {
			scale += w[i] * norms[i]
		}
		for j := range out {
			out[j] = (m[j]*math.Cos(nu) + tau[j]*math.Sin(nu)/nu) * scale
		}
	}
	if in.Base != nil {
		for j := range out {
			out[j] += in.Base[j]
		}
	}
	return out, nil
}

func karcher(in Inputs) ([]float64, error) {
	xs := in.Models
	if len(xs) == 1 {
		return slices.Clone(xs[0]), nil
	}
	tol, maxIter := in.Global["tol"], int(in.Global["max_iter"])
	n := len(xs[0])
	alpha := 1 / float64(len(xs))
	var units [][]float64
	var scale float64
	for _, x := range xs {
		nx := norm2(x)
		scale += alpha * nx
		if nx > tol {
			u := make([]float64, n)
			for j := range u {
				u[j] = x[j] / nx
			}
			units = append(units, u)
		}
	}
	if len(units) == 0 {
		return make([]float64, n), nil
	}
	a := 1 / float64(len(units))
	u := make([]float64, n)
	for _, ui := range units {
		for j := range u {
			u[j] += a * ui[j]
		}
	}
	if nu := norm2(u); nu < tol {
		copy(u, units[0])
	} else {
		for j := range u {
			u[j] /= nu
		}
	}
	for it := 0; it < maxIter; it++ {
		T := make([]float64, n)
		for _, ui := range units {
			d := max(-1, min(1, dot(u, ui)))
			th := math.Acos(d)
			if th < tol {
				continue
			}
			f := a * th / math.Sin(th)
			for j := range T {
				T[j] += f * (ui[j] - d*u[j])
			}
		}
		nT := norm2(T)
		if nT < tol {
			break
		}
		c, s := math.Cos(nT), math.Sin(nT)
		for j := range u {
			u[j] = c*u[j] + s*T[j]/nT
		}
		if nu := norm2(u); nu > tol {
			for j := range u {
				u[j] /= nu
			}
		}
	}
	for j := range u {
		u[j] *= scale
	}
	return u, nil
}

func l1(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += math.Abs(x)
	}
	return s
}

// rescaleL1 scales kept to d's L1 norm (unchanged when either is < 1e-7).
func rescaleL1(d, kept []float64) {
	a, b := l1(d), l1(kept)
	if a < 1e-7 || b < 1e-7 {
		return
	}
	for i := range kept {
		kept[i] *= a / b
	}
}

// order returns indices sorted by |d| (descending or ascending), ties by
// index.
func order(d []float64, desc bool) []int {
	idx := make([]int, len(d))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		if desc {
			return math.Abs(d[idx[a]]) > math.Abs(d[idx[b]])
		}
		return math.Abs(d[idx[a]]) < math.Abs(d[idx[b]])
	})
	return idx
}

func taskVectors(method string, in Inputs) ([]float64, error) {
	b := in.Base
	n := len(b)
	if len(in.Models) == 0 {
		return slices.Clone(b), nil
	}
	consensus := map[string]bool{"ties": true, "dare_ties": true, "breadcrumbs_ties": true, "della": true}[method]
	rescale := int(in.Global["rescale"])
	if rescale == RescaleInverse && !mkconfig.Methods[method].Random {
		return nil, refuse("rescale: inverse (1/keep probability) applies to the random methods (dare_*, della*), not %s", method)
	}
	type tv struct {
		w float64
		d []float64
	}
	var tvs []tv
	for i, x := range in.Models {
		p := in.PerModel[i]
		d := make([]float64, n)
		for j := range d {
			d[j] = x[j] - b[j]
		}
		density := p["density"]
		kept := d
		if density < 1 {
			var err error
			switch method {
			case "ties":
				kept, err = magnitude(d, density)
			case "dare_linear", "dare_ties":
				kept = bernoulli(d, density, rescale, rand.New(rand.NewPCG(in.Seed, uint64(i))))
			case "breadcrumbs", "breadcrumbs_ties":
				kept = outliers(d, density, p["gamma"])
			case "della", "della_linear":
				kept, err = della(d, in.Shape, density, p["epsilon"], rescale, rand.New(rand.NewPCG(in.Seed, uint64(i))))
			}
			if err != nil {
				return nil, err
			}
			if rescale == RescaleL1 && method != "task_arithmetic" {
				rescaleL1(d, kept)
			}
		}
		tvs = append(tvs, tv{p["weight"], kept})
	}
	lambda := in.Global["lambda"]
	out := make([]float64, n)
	for j := range out {
		var sum, mixed, div float64
		for _, t := range tvs {
			sum += t.w * t.d[j]
		}
		for _, t := range tvs {
			wd := t.w * t.d[j]
			if consensus && !(wd > 0 && sum >= 0 || wd < 0 && sum < 0) {
				continue
			}
			mixed += wd
			div += t.w
		}
		if consensus && div == 0 || !consensus && math.Abs(div) < 1e-8 {
			div = 1
		}
		if in.Global["normalize"] != 0 {
			mixed /= div
		}
		out[j] = b[j] + lambda*mixed
	}
	return out, nil
}

func magnitude(d []float64, density float64) ([]float64, error) {
	k := int(density * float64(len(d)))
	if k <= 0 {
		return nil, refuse("density %g keeps no entry of %d (int(density * numel) = 0)", density, len(d))
	}
	kept := make([]float64, len(d))
	for _, i := range order(d, true)[:k] {
		kept[i] = d[i]
	}
	return kept, nil
}

func outliers(d []float64, density, gamma float64) []float64 {
	n := len(d)
	keep, top := int(density*float64(n)), int(gamma*float64(n))
	bot := n - keep - top
	if bot < 0 {
		top += bot
		bot = 0
	}
	kept := make([]float64, n)
	for _, i := range order(d, false)[bot : n-top] {
		kept[i] = d[i]
	}
	return kept
}

func bernoulli(d []float64, density float64, rescale int, rng *rand.Rand) []float64 {
	kept := make([]float64, len(d))
	for i := range d {
		if rng.Float64() < density {
			kept[i] = d[i]
			if rescale == RescaleInverse {
				kept[i] /= density
			}
		}
	}
	return kept
}

func della(d []float64, shape []int, density, eps float64, rescale int, rng *rand.Rand) ([]float64, error) {
	if density <= 0 {
		return make([]float64, len(d)), nil
	}
	if density+eps >= 1 || density-eps <= 0 {
		return nil, refuse("density - epsilon and density + epsilon must lie in (0, 1): density %g, epsilon %g", density, eps)
	}
	kept := make([]float64, len(d))
	// rows: fibers along axis 1 (the whole tensor for 1-D)
	var rows [][]int
	if len(shape) < 2 {
		rows = vectors(shape, true, false)
	} else {
		a1 := shape[1]
		inner := 1
		for _, x := range shape[2:] {
			inner *= x
		}
		for o := 0; o < shape[0]; o++ {
			for r := 0; r < inner; r++ {
				idx := make([]int, a1)
				for j := range idx {
					idx[j] = (o*a1+j)*inner + r
				}
				rows = append(rows, idx)
			}
		}
	}
	for _, idx := range rows {
		v := gather(d, idx)
		ord := order(v, false)
		n := len(v)
		for rank, k := range ord {
			p := density
			if n > 1 {
				p = density - eps + 2*eps*float64(rank)/float64(n-1)
			}
			if rng.Float64() < p {
				kept[idx[k]] = v[k]
				if rescale == RescaleInverse {
					kept[idx[k]] /= p
				}
			}
		}
	}
	return kept, nil
}

func modelStock(in Inputs) ([]float64, error) {
	if len(in.Models) == 0 {
		return slices.Clone(in.Base), nil
	}
	if len(in.Models) < 2 {
		return nil, refuse("model_stock takes at least 3 models (the base and two others), got %d", len(in.Models)+1)
	}
	b := in.Base
	out := make([]float64, len(b))
	N := float64(len(in.Models))
	for _, idx := range vectors(in.Shape, in.Global["filter_wise"] == 0, false) {
		var off [][]float64
		for _, x := range in.Models {
			o := gather(x, idx)
			for k, j := range idx {
				o[k] -= b[j]
			}
			off = append(off, o)
		}
		var c float64
		pairs := 0
		for i := range off {
			for j := i + 1; j < len(off); j++ {
				c += max(-1, min(1, dot(off[i], off[j])/max(norm2(off[i])*norm2(off[j]), 1e-6)))
				pairs++
			}
		}
		c /= float64(pairs)
		t := N * c / (1 + (N-1)*c)
		for _, j := range idx {
			var avg float64
			for _, x := range in.Models {
				avg += x[j]
			}
			avg /= N
			out[j] = t*avg + (1-t)*b[j]
		}
	}
	return out, nil
}

func nearswap(in Inputs) ([]float64, error) {
	switch len(in.Models) {
	case 0:
		return slices.Clone(in.Base), nil
	case 1:
	default:
		return nil, refuse("nearswap takes the base and exactly one other model, got %d others", len(in.Models))
	}
	t := in.Global["t"]
	out := make([]float64, len(in.Base))
	for j, a := range in.Base {
		x := in.Models[0][j]
		w := max(0, min(1, t/max(math.Abs(a-x), 1e-6)))
		out[j] = w*x + (1-w)*a
	}
	return out, nil
}

func ram(in Inputs, plus bool) ([]float64, error) {
	b := in.Base
	eps := in.Global["epsilon"]
	n := len(b)
	if len(in.Models) == 0 {
		return slices.Clone(b), nil
	}
	cnt := make([]int, n)
	for _, x := range in.Models {
		for j := range cnt {
			if math.Abs(x[j]-b[j]) > eps {
				cnt[j]++
			}
		}
	}
	out := slices.Clone(b)
	for _, x := range in.Models {
		lam := 1.0
		if plus {
			var shared, unique float64
			for j := range cnt {
				if math.Abs(x[j]-b[j]) > eps {
					if cnt[j] > 1 {
						shared++
					} else {
						unique++
					}
				}
			}
			rho := shared / max(unique, eps)
			lam = 1 + in.Global["r"]*max(0, min(in.Global["alpha"], rho))
		}
		for j := range out {
			d := x[j] - b[j]
			if math.Abs(d) <= eps {
				continue
			}
			if cnt[j] == 1 {
				out[j] += d * lam
			} else {
				out[j] += d / float64(cnt[j])
			}
		}
	}
	return out, nil
}

func sce(in Inputs) ([]float64, error) {
	b := in.Base
	n := len(b)
	N := len(in.Models)
	if N == 0 {
		return slices.Clone(b), nil
	}
	T := make([][]float64, N)
	for i, x := range in.Models {
		T[i] = make([]float64, n)
		for j := range b {
			T[i][j] = x[j] - b[j]
		}
	}
	if topk := in.Global["select_topk"]; topk < 1 {
		variance := make([]float64, n)
		nonzero := 0
		for j := range variance {
			var m float64
			for i := range T {
				m += T[i][j]
			}
			m /= float64(N)
			for i := range T {
				variance[j] += (T[i][j] - m) * (T[i][j] - m)
			}
			variance[j] /= float64(N)
			if variance[j] != 0 {
				nonzero++
			}
		}
		keep := make([]bool, n)
		if k := int(float64(nonzero) * topk); topk > 0 && k > 0 {
			for _, j := range order(variance, true)[:k] {
				keep[j] = true
			}
		}
		for i := range T {
			for j := range keep {
				if !keep[j] {
					T[i][j] = 0
				}
			}
		}
	}
	w := make([]float64, N)
	var sw float64
	for i := range T {
		w[i] = dot(T[i], T[i]) / float64(n)
		sw += w[i]
	}
	for i := range w {
		if math.Abs(sw) < 1e-6 {
			w[i] = 1 / float64(N)
		} else {
			w[i] /= sw
		}
	}
	out := make([]float64, n)
	for j := range out {
		var sum float64
		for i := range T {
			sum += T[i][j]
		}
		var num, den float64
		for i := range T {
			if t := T[i][j]; t > 0 && sum >= 0 || t < 0 && sum < 0 {
				num += t * w[i]
				den += w[i]
			}
		}
		out[j] = b[j] + num/max(den, 1e-6)
	}
	return out, nil
}

func arceeFusion(in Inputs) ([]float64, error) {
	switch len(in.Models) {
	case 0:
		return slices.Clone(in.Base), nil
	case 1:
	default:
		return nil, refuse("arcee_fusion takes the base and exactly one other model, got %d others", len(in.Models))
	}
	b, x := in.Base, in.Models[0]
	imp := make([]float64, len(b))
	for _, idx := range vectors(in.Shape, false, false) {
		p, q := softmax(gather(x, idx)), softmax(gather(b, idx))
		var kl float64
		for k := range p {
			pk, qk := p[k]+1e-8, q[k]+1e-8
			kl += pk * math.Log(pk/qk)
		}
		for _, j := range idx {
			imp[j] = math.Abs(x[j]-b[j]) * kl
		}
	}
	s := slices.Clone(imp)
	slices.Sort(s)
	quant := func(f float64) float64 { return s[int(float32(f)*float32(len(s)-1))] }
	thr := quant(0.5) + 1.5*(quant(0.75)-quant(0.25))
	out := slices.Clone(b)
	for j := range out {
		if imp[j] >= thr {
			out[j] = x[j]
		}
	}
	return out, nil
}

func softmax(v []float64) []float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	out := make([]float64, len(v))
	var s float64
	for i, x := range v {
		out[i] = math.Exp(x - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}
