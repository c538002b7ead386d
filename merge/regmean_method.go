package merge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/tensors"
)

// regmean: RegMean (Jin et al., 2023): each Linear layer with input
// statistics merged in closed form, W* = (sum_i W_i G_i)(sum_i G_i)^-1
// (biases included as the weight of a constant input); every other tensor
// averaged.
type regmeanMethod struct{ about }

func init() {
	Register(regmeanMethod{about{name: "regmean", doc: "RegMean: closed-form merge of Linear layers from input Gram matrices"}})
}

func (regmeanMethod) Params() []Param {
	return []Param{weightParam(),
		{Name: "stats", Kind: Path, Scope: PerModel, Doc: "regmean: one statistics file per model, comma-separated"},
		{Name: "calib", Kind: Path, Doc: "calibration inputs (pleas, regmean on MLPs)"},
		{Name: "calib_key", Kind: String, Doc: "name of the calibration tensor"},
		{Name: "act", Kind: String, Default: Text("relu"), Choices: []string{"relu", "gelu", "silu", "tanh"},
			Doc: "MLP activation: relu (default), gelu, silu, tanh (pleas, regmean with calib)"},
		{Name: "layers", Kind: List, Doc: "MLP layer order, comma-separated (mlp spec; pleas, regmean with calib)"},
		{Name: "alpha", Kind: Number, Default: Num(DefaultRegMeanAlpha), Check: InRange(0, 1, true, false),
			Doc: "regmean: scale of the Gram matrices' off-diagonal entries, in (0, 1] (default 0.9, as the RegMean paper recommends alpha < 1; 1 is the unscaled solution)"},
		{Name: "ridge", Kind: Number, Default: Num(0), Check: AtLeast(0),
			Doc: "ridge added to the least-squares systems, relative to their mean diagonal (pleas, regmean)"},
	}
}

func (regmeanMethod) Check(p *Plan) error {
	if err := needModels(p, 2, 0); err != nil {
		return err
	}
	if p.Has("calib") {
		return nil
	}
	for i, mi := range p.Models {
		if p.ModelValue(i, "stats").Text == "" {
			return fmt.Errorf("regmean needs statistics for every model (--stats S1,S2,...) or --calib for MLPs; %s has none", mi.Path)
		}
	}
	return nil
}

// Start reads the statistics files, or computes the statistics of MLPs on
// the calibration inputs.
func (regmeanMethod) Start(ctx context.Context, j *Job) (Merger, error) {
	r := &regmeanMerger{mods: map[string]*regModule{}}
	a, err := arch.Open(j.Models[0])
	if err != nil {
		return nil, err
	}
	r.arch = a
	p := j.Plan
	if calib := p.Global("calib").Text; calib != "" {
		in, err := mlp.OpenInputs(calib, p.Global("calib_key").Text)
		if err != nil {
			return nil, err
		}
		defer in.Close()
		act, err := mlp.ParseActivation(p.Global("act").Text)
		if err != nil {
			return nil, err
		}
		for _, m := range j.Models {
			n, err := mlp.Load(m, p.Global("layers").List, act)
			if err != nil {
				return nil, err
			}
			s, err := mlp.CollectStats(ctx, []*mlp.Network{n}, in, mlp.Options{})
			if err != nil {
				return nil, err
			}
			r.mem = append(r.mem, s)
		}
		return r, r.notes(j)
	}
	for i := range p.Models {
		path := p.ModelValue(i, "stats").Text
		f, err := stats.Open(path)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.files = append(r.files, f)
		if f.Kind != stats.Single {
			r.Close()
			return nil, fmt.Errorf("%s: regmean needs each model's own (single) statistics, not %s ones", path, f.Kind)
		}
	}
	if err := r.notes(j); err != nil {
		r.Close()
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
func (r *regmeanMerger) notes(j *Job) error {
	alpha := j.Plan.Float("alpha")
	if !j.Plan.Has("alpha") {
		j.Note("regmean: off-diagonal Gram entries scaled by alpha = %g (the default; --alpha 1 for the unscaled solution)", alpha)
	}
	var short []string
	for _, m := range r.arch.Modules {
		if !regmeanModule(m) || !r.hasAll(m.Name) {
			continue
		}
		dim := m.InFeatures + int(b2u(m.Bias() != nil))
		for i := range j.Models {
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
		j.Note("%s", msg)
	}
	return nil
}

func (r *regmeanMerger) hasAll(name string) bool {
	for i := range max(len(r.mem), len(r.files)) {
		if !r.has(i, name) {
			return false
		}
	}
	return true
}

func (r *regmeanMerger) count(i int, name string) (int64, error) {
	if r.mem != nil {
		return r.mem[i].Module(name).Count, nil
	}
	return r.files[i].Count(name)
}

type regmeanMerger struct {
	files []*stats.File  // per model, when read from files
	mem   []*stats.Stats // per model, when computed with the MLP engine
	arch  *arch.Arch     // which weights are Linear/Conv1D/conv, in which orientation
	mu    sync.Mutex
	mods  map[string]*regModule // modules whose weight or bias is being written
}

func (r *regmeanMerger) Close() error {
	for _, f := range r.files {
		f.Close()
	}
	return nil
}

func (r *regmeanMerger) has(i int, name string) bool {
	if r.mem != nil {
		return r.mem[i].Module(name) != nil
	}
	return r.files[i].Has(name)
}

func (r *regmeanMerger) module(i int, name string) (*stats.Module, error) {
	if r.mem != nil {
		return r.mem[i].Module(name), nil
	}
	return r.files[i].Module(name)
}

// regModule is one Linear module being merged: its factored system, shared
// by the weight and the bias.
type regModule struct {
	once    sync.Once
	err     error
	mod     *arch.Module
	sys     *regmeanSystem
	out, in int
	hasBias bool
	w, b    []*Input // per model
	parts   int      // tensors of the module still to be written
	// full is the whole solution of a module that stores its weight
	// transposed (Conv1D: a chunk of the stored weight needs every output
	// row), computed once
	fullOnce sync.Once
	full     []float64
	fullErr  error
}

// Tensor: a Linear module's weight and bias with statistics are solved
// by blocks of output rows against the factored system (memory: the
// layer's Gram matrices and one block of rows); anything else is the
// weighted average.
func (r *regmeanMerger) Tensor(_ context.Context, t *TensorJob) (*Kernel, error) {
	average := func() (*Kernel, error) {
		ws, scale, err := linearScale(t.weights(allModels(len(t.Models))), true)
		if err != nil {
			return nil, err
		}
		return &Kernel{Inputs: t.Models, Fn: linearFn(ws, scale)}, nil
	}
	p, ok := r.arch.Param(t.Name)
	if !ok || !regmeanModule(p.Module) || (p.Name != "weight" && p.Name != "bias") || !r.hasAll(p.Module.Name) {
		return average() // no statistics, or not a Linear-like module: plain average
	}
	mod := p.Module
	isWeight := p.Name == "weight"
	r.mu.Lock()
	m, ok := r.mods[mod.Name]
	if !ok {
		out, in := mod.MatrixShape()
		m = &regModule{mod: mod, parts: 1, hasBias: mod.Bias() != nil, out: out, in: in}
		if m.hasBias {
			m.parts = 2
		}
		r.mods[mod.Name] = m
	}
	r.mu.Unlock()
	m.once.Do(func() { m.err = r.setup(t, m) })
	if m.err != nil {
		return nil, fmt.Errorf("module %q: %w", mod.Name, m.err)
	}
	ins := append(append([]*Input{}, m.w...), m.b...)
	done := func() {
		r.mu.Lock()
		if m.parts--; m.parts == 0 {
			delete(r.mods, mod.Name)
		}
		r.mu.Unlock()
	}
	if isWeight {
		return &Kernel{Inputs: ins, Chunk: m.chunk(t.DType, false), Done: done}, nil
	}
	return &Kernel{Inputs: ins, Chunk: m.chunk(t.DType, true), Done: done}, nil
}

// setup builds a module's system: per model the augmented Gram
// [[G, s], [s^T, n]] (the bias is the weight of a constant input 1) scaled
// by the model's weight.
func (r *regmeanMerger) setup(t *TensorJob, m *regModule) error {
	j := t.Job
	d := m.in
	if m.hasBias {
		d++
	}
	wname := m.mod.Weight().Tensor
	depth := Depth(wname, j.NumLayers)
	var grams [][]float64
	for i, model := range j.Models {
		s, err := r.module(i, m.mod.Name)
		if err != nil {
			return err
		}
		if s.Dim != m.in {
			return fmt.Errorf("statistics have %d input features, the %s weight has %d", s.Dim, m.mod.Kind, m.in)
		}
		np := j.num("weight")
		w := np.eval(np.model[i], wname, depth)
		g := make([]float64, d*d)
		for a := range m.in {
			for b := range m.in {
				g[a*d+b] = w * s.Gram[a*m.in+b]
			}
			if m.hasBias {
				g[a*d+m.in] = w * s.Sum[a]
				g[m.in*d+a] = w * s.Sum[a]
			}
		}
		if m.hasBias {
			g[m.in*d+m.in] = w * float64(s.Count)
		}
		grams = append(grams, g)
		wi, err := j.input(model, wname)
		if err != nil {
			return err
		}
		m.w = append(m.w, wi)
		if m.hasBias {
			bi, err := j.input(model, m.mod.Bias().Tensor)
			if err != nil {
				return err
			}
			m.b = append(m.b, bi)
		}
	}
	sys, err := newRegmeanSystem(grams, d, j.Plan.Float("alpha"), j.Plan.Float("ridge"))
	if err != nil {
		return err
	}
	m.sys = sys
	return nil
}

// rowBlock is how many output rows are solved together: about a million
// values of the augmented weights per model.
func (m *regModule) rowBlock() int { return max(1, min(m.out, regmeanBlockValues/(m.in+1))) }

// regmeanBlockValues bounds the augmented weights solved at a time, per model.
var regmeanBlockValues = 1 << 20

// solveBlock returns the merged augmented rows [r0, r1) (row-major, width
// in+1 with a bias, else in), in the module's own orientation.
func (m *regModule) solveBlock(r0, r1 int) ([]float64, error) {
	d := m.sys.in
	rows := r1 - r0
	w := make([][]float64, len(m.w))
	wv := make([]float64, rows*m.in)
	bv := make([]float64, rows)
	for k := range m.w {
		if err := m.readRows(m.w[k], r0, r1, wv); err != nil {
			return nil, err
		}
		if m.hasBias {
			if err := m.b[k].Decode(bv, r0); err != nil {
				return nil, err
			}
		}
		a := make([]float64, rows*d)
		for o := range rows {
			copy(a[o*d:o*d+m.in], wv[o*m.in:(o+1)*m.in])
			if m.hasBias {
				a[o*d+m.in] = bv[o]
			}
		}
		w[k] = a
	}
	return m.sys.solveRows(w, rows)
}

// readRows decodes rows [r0, r1) of a weight in the module's orientation
// [out, in]; a transposed weight (stored [in, out]) is read one stored row
// segment at a time.
func (m *regModule) readRows(in *Input, r0, r1 int, dst []float64) error {
	if !m.mod.Transposed() {
		return in.Decode(dst, r0*m.in)
	}
	rows := r1 - r0
	seg := make([]float64, rows)
	for c := range m.in {
		if err := in.Decode(seg, c*m.out+r0); err != nil {
			return err
		}
		for o, v := range seg {
			dst[o*m.in+c] = v
		}
	}
	return nil
}

// solution returns the whole solution, computed once (transposed modules).
func (m *regModule) solution(ctx context.Context) ([]float64, error) {
	m.fullOnce.Do(func() {
		rb := m.rowBlock()
		d := m.sys.in
		full := make([]float64, 0, m.out*d)
		for b0 := 0; b0 < m.out; b0 += rb {
			if err := ctx.Err(); err != nil {
				m.fullErr = err
				return
			}
			x, err := m.solveBlock(b0, min(b0+rb, m.out))
			if err != nil {
				m.fullErr = err
				return
			}
			full = append(full, x...)
		}
		m.full = full
	})
	return m.full, m.fullErr
}

// chunk returns the ChunkFunc of the weight (or the bias): the fixed row
// blocks overlapping the chunk are solved and the chunk's values taken
// from them, rounded once to the output dtype. A transposed weight takes
// its values from the whole solution.
func (m *regModule) chunk(dt tensors.DType, bias bool) func(ctx context.Context, off int64, dst []byte) error {
	return func(ctx context.Context, off int64, dst []byte) error {
		es := dt.Bits() / 8
		lo, n := int(off)/es, len(dst)/es
		d := m.sys.in
		if m.mod.Transposed() {
			x, err := m.solution(ctx)
			if err != nil {
				return err
			}
			vals := make([]float64, n)
			for k := range vals {
				e := lo + k
				if bias {
					vals[k] = x[e*d+m.in]
				} else { // stored [in, out]: element e is (c, o)
					c, o := e/m.out, e%m.out
					vals[k] = x[o*d+c]
				}
			}
			return encode64(dst, vals, dt)
		}
		width := m.in // elements per output row in this tensor
		if bias {
			width = 1
		}
		rb := m.rowBlock()
		vals := make([]float64, 0, min(n, rb*width))
		first, last := lo/width, (lo+n-1)/width
		for b0 := first / rb * rb; b0 <= last; b0 += rb {
			if err := ctx.Err(); err != nil {
				return err
			}
			b1 := min(b0+rb, m.out)
			x, err := m.solveBlock(b0, b1)
			if err != nil {
				return err
			}
			// the chunk's elements within rows [b0, b1)
			eLo, eHi := max(lo, b0*width), min(lo+n, b1*width)
			vals = vals[:0]
			for e := eLo; e < eHi; e++ {
				o, c := e/width, e%width
				if bias {
					c = m.in
				}
				vals = append(vals, x[(o-b0)*d+c])
			}
			if err := encode64(dst[(eLo-lo)*es:(eHi-lo)*es], vals, dt); err != nil {
				return err
			}
		}
		return nil
	}
}
