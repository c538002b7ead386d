package merge

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// Report describes a finished merge.
type Report struct {
	Method string
	Output *checkpoint.Written
	Notes  []string // what was chosen on the user's behalf (rescaling, spec, ...)
	Sweeps int      // weight matching sweeps (wm)
	Width  int      // pleas: merged hidden width of the first group
}

// job is an opened plan.
type job struct {
	p         *Plan
	models    []*checkpoint.Model
	base      *checkpoint.Model // nil when the method has none
	outDType  tensors.DType
	numLayers int
	report    *Report

	spec  *permute.Spec
	perms []permute.Perms // per model (wm)
	fish  []*fisher.File  // per model (fisher)
	reg   *regmeanState
}

func (j *job) close() {
	for _, m := range j.models {
		m.Close()
	}
	if j.base != nil && !slices.Contains(j.models, j.base) {
		j.base.Close()
	}
	for _, f := range j.fish {
		if f != nil {
			f.Close()
		}
	}
	if j.reg != nil {
		j.reg.close()
	}
}

// Execute runs a merge plan and writes the merged checkpoint to out, one
// tensor at a time (one layer's tensors for methods that need a layer).
// opts sets the output layout (sharding, Force); the first model's metadata
// and companion files are inherited unless opts says otherwise.
func Execute(ctx context.Context, p *Plan, out string, opts checkpoint.WriteOptions) (*Report, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	opts.AllowNonFinite = opts.AllowNonFinite || p.AllowNonFinite
	j := &job{p: p, report: &Report{Method: p.Method}}
	defer j.close()
	if err := j.open(); err != nil {
		return nil, err
	}
	if p.Method == "pleas" {
		return j.pleas(ctx, out, opts)
	}
	if err := j.prepare(ctx); err != nil {
		return nil, err
	}
	opts, err := j.models[0].DefaultWriteOptions(opts)
	if err == nil {
		opts, err = j.models[0].WithDType(opts, j.outDType) // config.json's torch_dtype
	}
	if err != nil {
		return nil, err
	}
	for _, m := range j.models[1:] {
		opts.Inputs = append(append(opts.Inputs, m.Path), m.Files()...)
	}
	if j.base != nil {
		opts.Inputs = append(append(opts.Inputs, j.base.Path), j.base.Files()...)
	}
	entries := j.entries()
	written, err := checkpoint.Write(ctx, out, entries, j.produce, opts)
	if err != nil {
		return nil, err
	}
	j.report.Output = written
	return j.report, nil
}

func (j *job) open() error {
	p := j.p
	for _, mi := range p.Models {
		m, err := checkpoint.Open(mi.Path)
		if err != nil {
			return err
		}
		j.models = append(j.models, m)
	}
	for i, m := range j.models[1:] {
		if err := checkpoint.SameArchitecture(j.models[0], m); err != nil {
			return fmt.Errorf("models %s and %s differ: %w", p.Models[0].Path, p.Models[i+1].Path, err)
		}
	}
	if p.Base != "" {
		for i, mi := range p.Models {
			if mi.Path == p.Base {
				j.base = j.models[i]
			}
		}
		if j.base == nil {
			b, err := checkpoint.Open(p.Base)
			if err != nil {
				return err
			}
			j.base = b
			// the base must hold every tensor of the models, same shapes;
			// it may have more (those pass through, as in mergekit)
			for _, n := range j.models[0].Names() {
				mi, _ := j.models[0].Info(n)
				bi, ok := b.Info(n)
				if !ok {
					return fmt.Errorf("tensor %q is in %s but not in the base model %s", n, j.models[0].Path, p.Base)
				}
				if !slices.Equal(mi.Shape, bi.Shape) {
					return fmt.Errorf("tensor %q has shape %v in %s but %v in the base model %s", n, mi.Shape, j.models[0].Path, bi.Shape, p.Base)
				}
			}
		}
	}
	if p.DType != "" {
		dt, err := tensors.ParseUserDType(p.DType)
		if err != nil {
			return err
		}
		if !dt.IsFloat() {
			return fmt.Errorf("output dtype %s is not a floating type", dt)
		}
		j.outDType = dt
	}
	for _, n := range j.models[0].Names() {
		j.numLayers = max(j.numLayers, LayerOf(n)+1)
	}
	return nil
}

// prepare does the per-merge work before streaming: alignment for wm,
// Fisher files, RegMean statistics.
func (j *job) prepare(ctx context.Context) error {
	p := j.p
	switch p.Method {
	case "dare-linear", "dare-ties":
		j.report.Notes = append(j.report.Notes, "DARE rescaling: "+map[Rescale]string{
			RescaleInverse: "kept entries divided by the density (the DARE paper's; unbiased)",
			RescaleL1:      "kept entries scaled to keep the task vector's L1 norm (mergekit's)",
			RescaleNone:    "none"}[p.Rescale])
	case "wm":
		return j.align(ctx)
	case "fisher":
		for i, mi := range p.Models {
			f, err := fisher.Open(mi.Fisher)
			if err != nil {
				return err
			}
			j.fish = append(j.fish, f)
			if err := f.CheckAgainst(j.models[i]); err != nil {
				return err
			}
		}
	case "regmean":
		r, err := newRegmean(ctx, j)
		if err != nil {
			return err
		}
		j.reg = r
	}
	return nil
}

// align computes the permutations of wm: every model aligned to the first
// (two models) or to each other with MergeMany (three or more).
func (j *job) align(ctx context.Context) error {
	spec, err := permute.BuiltinSpec(j.p.Spec, j.models[0], j.p.Layers)
	if err != nil {
		return err
	}
	if err := spec.Validate(permute.Shapes(j.models[0])); err != nil {
		return err
	}
	j.spec = spec
	mo := permute.MatchOptions{Seed: j.p.Seed, Restarts: j.p.restarts()}
	if len(j.models) == 2 {
		a, b := permute.NewCheckpointSource(j.models[0], 4<<30), permute.NewCheckpointSource(j.models[1], 4<<30)
		res, err := permute.WeightMatching(ctx, spec, a, b, mo)
		if err != nil {
			return err
		}
		j.perms = []permute.Perms{permute.Identity(spec), res.Perms}
		j.report.Sweeps = res.Sweeps
		j.report.Notes = append(j.report.Notes, fmt.Sprintf("weight matching: %d sweeps, distance %.6g -> %.6g", res.Sweeps, res.DistanceBefore, res.DistanceAfter))
		return nil
	}
	var srcs []permute.MemorySource
	for _, m := range j.models {
		s, err := permute.LoadSource(m, nil)
		if err != nil {
			return err
		}
		srcs = append(srcs, s)
	}
	perms, err := permute.MergeMany(ctx, spec, srcs, mo)
	if err != nil {
		return err
	}
	j.perms = perms
	j.report.Notes = append(j.report.Notes, fmt.Sprintf("MergeMany aligned %d models", len(j.models)))
	return nil
}

func (j *job) entries() []safetensors.Entry {
	var out []safetensors.Entry
	first := j.models[0]
	for _, e := range first.Entries() {
		if e.DType.IsFloat() && j.outDType != 0 {
			e.DType = j.outDType
		}
		out = append(out, e)
	}
	if j.base != nil && !slices.Contains(j.models, j.base) {
		for _, e := range j.base.Entries() {
			if !first.Has(e.Name) {
				out = append(out, e) // only in the base: passed through
			}
		}
	}
	return out
}

// floats decodes the named tensor of a model, with the model's alignment
// permutation applied (wm).
func (j *job) floats(i int, name string) ([]float32, error) {
	m := j.models[i]
	t, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	if j.perms != nil {
		if t, err = j.spec.Apply(t, j.perms[i]); err != nil {
			return nil, err
		}
	}
	v, err := t.Float32()
	m.Release(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	for k, x := range v {
		if !finite(x) {
			return nil, fmt.Errorf("%s: tensor %q has a non-finite value (%g) at index %d", m.Path, name, x, k)
		}
	}
	return v, nil
}

func (j *job) produce(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
	first := j.models[0]
	info, inModels := first.Info(e.Name)
	if !inModels { // only in the base
		return j.base.Passthrough()(ctx, e)
	}
	if !info.DType.IsFloat() { // integers and narrow floats: the first model's
		return first.Passthrough()(ctx, e)
	}
	if coef, ok := j.affine(e.Name); ok {
		return j.produceAffine(e, coef)
	}
	out := make([]float32, info.Size*8/int64(info.DType.Bits()))
	if err := j.compute(e.Name, info.Shape, out); err != nil {
		return nil, nil, fmt.Errorf("tensor %q: %w", e.Name, err)
	}
	if !j.p.AllowNonFinite {
		for k, x := range out {
			if !finite(x) {
				return nil, nil, fmt.Errorf("tensor %q: the merge produced %g at index %d (use --allow-nonfinite to write it anyway)", e.Name, x, k)
			}
		}
	}
	t, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, out)
	return t, nil, err
}

// compute fills out with the merged values of the named tensor.
func (j *job) compute(name string, shape []int64, out []float32) error {
	p := j.p
	depth := Depth(name, j.numLayers)
	var xs [][]float32
	for i := range j.models {
		if j.base != nil && j.models[i] == j.base && j.p.needsBase() {
			continue // the base is not one of the task vectors
		}
		v, err := j.floats(i, name)
		if err != nil {
			return err
		}
		xs = append(xs, v)
	}
	weights := make([]float64, 0, len(xs))
	densities := make([]float64, 0, len(xs))
	var rngs []*rand.Rand
	for i, mi := range p.Models {
		if j.base != nil && j.models[i] == j.base && p.needsBase() {
			continue
		}
		w, ok := mi.Weight.Eval(name, depth)
		if !ok {
			w = 1
		}
		d, ok := mi.Density.Eval(name, depth)
		if !ok {
			d = 1
		}
		weights = append(weights, w)
		densities = append(densities, d)
	}
	lambda, ok := p.Lambda.Eval(name, depth)
	if !ok {
		lambda = 1
	}
	switch p.Method {
	case "linear", "wm":
		return Linear(out, xs, weights, p.normalize())
	case "slerp":
		t, ok := p.T.Eval(name, depth)
		if !ok {
			return fmt.Errorf("no value of t applies")
		}
		a, b := xs[0], xs[1]
		if p.Base == p.Models[1].Path {
			a, b = b, a
		}
		return Slerp(out, a, b, t)
	case "fisher":
		return j.fisherMerge(name, xs, weights, out)
	case "regmean":
		return j.reg.compute(j, name, xs, weights, out)
	}
	base, err := j.baseFloats(name)
	if err != nil {
		return err
	}
	o := TaskVectorOptions{Weights: weights, Densities: densities, Lambda: lambda, Normalize: p.normalize()}
	switch p.Method {
	case "ties":
		o.Sparsify, o.Consensus = Magnitude, true
	case "dare-linear", "dare-ties":
		o.Sparsify, o.Rescale, o.Consensus = Random, p.Rescale, p.Method == "dare-ties"
		for _, x := range xs {
			rngs = append(rngs, dareStream(p.Seed, name, x))
		}
		o.RNGs = rngs
	}
	return TaskVectors(out, base, xs, o)
}

func (j *job) baseFloats(name string) ([]float32, error) {
	t, err := j.base.Tensor(name)
	if err != nil {
		return nil, err
	}
	v, err := t.Float32()
	j.base.Release(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", j.base.Path, err)
	}
	return v, nil
}

var crcTable = crc64.MakeTable(crc64.ECMA)

// dareStream returns the random stream DARE uses for one model's tensor. It
// depends on the seed, the tensor's name and the model's own values, never
// on the model's position in the list or its path: reordering or renaming
// the models gives the same merge.
func dareStream(seed uint64, name string, values []float32) *rand.Rand {
	h := crc64.New(crcTable)
	h.Write([]byte(name))
	var buf [4096]byte
	for off := 0; off < len(values); off += len(buf) / 4 {
		n := min(len(buf)/4, len(values)-off)
		for i, v := range values[off : off+n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*n])
	}
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// fisherMerge is the Fisher-weighted average sum_i F_i x_i / sum_i F_i
// (Matena & Raffel). Each model's Fisher is floored at 1e-6 of the tensor's
// mean Fisher over the models, so entries where every Fisher is (near) zero
// get the plain (weighted) average, never zero; per-model weights multiply
// the Fisher.
func (j *job) fisherMerge(name string, xs [][]float32, weights []float64, out []float32) error {
	fs := make([][]float32, len(xs))
	var mean float64
	for i, f := range j.fish {
		if !f.Has(name) {
			return Linear(out, xs, weights, true) // no Fisher for this tensor (a frozen or integer one)
		}
		v, err := f.Get(name)
		if err != nil {
			return err
		}
		if len(v) != len(out) {
			return fmt.Errorf("%s: %d Fisher values for %d weights", f.Path, len(v), len(out))
		}
		fs[i] = v
		for _, x := range v {
			mean += float64(x)
		}
	}
	mean /= float64(len(out) * len(xs))
	floor := 1e-6 * mean
	for e := range out {
		var num, den float64
		for i := range xs {
			f := weights[i] * (max(float64(fs[i][e]), floor) + 1e-30)
			num += f * float64(xs[i][e])
			den += f
		}
		out[e] = float32(num / den)
	}
	return nil
}

// finite reports whether x is neither NaN nor infinite (exponent not all ones).
func finite(x float32) bool { return math.Float32bits(x)&0x7f800000 != 0x7f800000 }
