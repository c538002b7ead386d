package lowrank

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Methods are the compression methods (the registered scalings: svd,
// fwsvd, asvd, whiten; one file each).
var Methods []string

// InputStats gives the statistics of a module's inputs (a single-model
// *stats.File, or Stats.Lookup of statistics in memory).
type InputStats = stats.Lookup

// StatsOf adapts in-memory statistics to InputStats.
func StatsOf(s *stats.Stats) InputStats { return s.Lookup() }

// Override sets the rank rule of the tensors whose names match Pattern.
type Override struct {
	Pattern *regexp.Regexp
	Rule    RankRule
}

// CompressOptions describe a compression.
type CompressOptions struct {
	Method    string           // svd, fwsvd, asvd or whiten
	Rule      RankRule         // the rank rule
	Overrides []Override       // per-tensor rules; the first match wins
	Targets   []*regexp.Regexp // weight tensors to factorise (default: the architecture's default targets)
	// Format is "factored" (M.0.weight, M.1.weight, M.1.bias) or "dense"
	// (the rank-r reconstruction in M.weight).
	Format string
	DType  tensors.DType // output dtype of floating tensors (0 keeps each)
	SVD    SVDOptions
	Fisher *fisher.File // fwsvd
	PerRow bool         // fwsvd: weight output rows instead of input features
	Stats  InputStats   // asvd, whiten
	Alpha  float64      // asvd exponent (default 0.5)
	// Arch describes the model (nil: arch.Open(m)): which weights are
	// matrices, in which orientation, and the default targets.
	Arch *arch.Arch
	// Progress, if set, is called as tensors are written.
	Progress func(done, total int64)
}

// TensorReport says what happened to one target tensor.
type TensorReport struct {
	Name        string  `json:"name"`
	Module      string  `json:"module"`
	Kind        string  `json:"kind"` // the module's kind: linear, conv1d, conv, embedding
	Shape       []int64 `json:"shape"`
	InFeatures  int     `json:"in_features"`  // the matrix in the module's orientation: [out, in]
	OutFeatures int     `json:"out_features"` //
	Bias        bool    `json:"bias"`
	Rank        int     `json:"rank"`
	Params      int64   `json:"params"`      // parameters of the original matrix
	Kept        int64   `json:"kept_params"` // parameters after (factors, or the matrix if left dense)
	RelError    float64 `json:"rel_error"`   // ||W - W'||_F / ||W||_F
	Energy      float64 `json:"energy"`      // kept fraction of the (scaled) squared singular values
	LeftDense   bool    `json:"left_dense"`  // left as it was: factorising would not have saved parameters, or the rank does not fit
	Note        string  `json:"note,omitempty"`
}

// result of one module, computed once for all its output tensors
type moduleResult struct {
	once  sync.Once
	f     *Factorization
	err   error
	note  string
	parts int
}

// an output tensor of a target: which part of it
type outRef struct {
	t     *target
	field string // "weight" (dense or kept), "bias" (kept), "A", "B", "Bbias" (factors)
}

// Compress factorises the target weights of m and writes the compressed
// checkpoint to out, streaming one matrix at a time; every other tensor
// passes through. It returns a report per target. Each target is factorised
// in its module's own orientation [out, in] (a GPT-2 Conv1D's [in, out]
// weight is transposed first, and back for the dense format).
func Compress(ctx context.Context, m *checkpoint.Model, out string, o CompressOptions, wopts checkpoint.WriteOptions) ([]TensorReport, *checkpoint.Written, error) {
	sc, err := scalingOf(o.Method)
	if err != nil {
		return nil, nil, err
	}
	if o.Format == "" {
		o.Format = "factored"
	}
	if o.Format != "factored" && o.Format != "dense" {
		return nil, nil, fmt.Errorf("unknown format %q (want factored or dense)", o.Format)
	}
	if err := o.Rule.Validate(); err != nil {
		return nil, nil, err
	}
	if o.Alpha == 0 {
		o.Alpha = 0.5
	}
	if err := sc.Check(o, m); err != nil {
		return nil, nil, err
	}
	a, err := openArch(m, o.Arch)
	if err != nil {
		return nil, nil, err
	}
	targets, err := findTargets(m, a, targetSelection{patterns: o.Targets, rule: o.Rule, overrides: o.Overrides, what: "factorise"})
	if err != nil {
		return nil, nil, err
	}
	if !slices.ContainsFunc(targets, func(t *target) bool { return !t.skip }) {
		return nil, nil, fmt.Errorf("%s: no target can be factorised: %s: %s", m.Path, targets[0].name, targets[0].note)
	}
	for _, t := range targets {
		if t.skip {
			continue
		}
		if err := sc.CheckTarget(o, t); err != nil {
			return nil, nil, err
		}
	}
	// the output tensors, and which part of which target each one is
	refs := map[string]outRef{}
	factorOf := map[string]string{} // factor tensor -> module
	replaced := map[string]bool{}   // model tensors the factored format leaves out
	results := map[string]*moduleResult{}
	byWeight, byBias := map[string]*target{}, map[string]*target{}
	for _, t := range targets {
		if t.skip {
			continue
		}
		byWeight[t.name] = t
		if t.hasBias {
			byBias[t.mod.Bias().Tensor] = t
		}
	}
	var entries []safetensors.Entry
	names := map[string]bool{}
	for _, e := range m.Entries() {
		names[e.Name] = true
		if o.DType != 0 && e.DType.IsFloat() {
			e.DType = o.DType
		}
		if t := byBias[e.Name]; t != nil && o.Format == "factored" {
			continue // emitted with the weight
		}
		t := byWeight[e.Name]
		if t == nil {
			entries = append(entries, e)
			continue
		}
		if o.Format == "dense" {
			results[t.module] = &moduleResult{parts: 1}
			refs[e.Name] = outRef{t, "weight"}
			entries = append(entries, e)
			continue
		}
		r := &moduleResult{}
		results[t.module] = r
		bdt := t.biasDType
		if o.DType != 0 {
			bdt = o.DType
		}
		k := t.fixedRank
		energy := k == 0
		if k == 0 {
			k = min(t.m, t.n) // the bound
		}
		keepDense := energy || t.dense
		factored := energy || !t.dense
		bias := ""
		if t.hasBias {
			bias = t.mod.Bias().Tensor
		}
		if keepDense {
			entries = append(entries, safetensors.Entry{Name: t.name, DType: e.DType, Shape: t.shape, Optional: energy})
			refs[t.name] = outRef{t, "weight"}
			if bias != "" {
				entries = append(entries, safetensors.Entry{Name: bias, DType: bdt, Shape: []int64{int64(t.m)}, Optional: energy})
				refs[bias] = outRef{t, "bias"}
			}
			r.parts += 1 + btoi(t.hasBias)
		}
		if factored {
			if !keepDense {
				replaced[t.name] = true
				if bias != "" {
					replaced[bias] = true
				}
			}
			an, bn, biasn := factorNames(t.module)
			s0, s1 := factorShapes(t.mod, t.shape, k)
			entries = append(entries,
				safetensors.Entry{Name: an, DType: e.DType, Shape: s0, Bounded: energy, Optional: energy},
				safetensors.Entry{Name: bn, DType: e.DType, Shape: s1, Bounded: energy, Optional: energy})
			refs[an], refs[bn] = outRef{t, "A"}, outRef{t, "B"}
			factorOf[an], factorOf[bn] = t.module, t.module
			if bias != "" {
				entries = append(entries, safetensors.Entry{Name: biasn, DType: bdt, Shape: []int64{int64(t.m)}, Optional: energy})
				refs[biasn] = outRef{t, "Bbias"}
				factorOf[biasn] = t.module
			}
			r.parts += 2 + btoi(t.hasBias)
		}
	}
	if o.Format == "factored" {
		if err := checkCollisions(names, factorOf, replaced); err != nil {
			return nil, nil, err
		}
	}
	var mu sync.Mutex
	reports := map[string]*TensorReport{}
	for _, t := range targets {
		if t.skip {
			reports[t.name] = baseReport(t)
			reports[t.name].LeftDense = true
			reports[t.name].Kept = reports[t.name].Params
		}
	}
	var targetNames []string
	for _, t := range targets {
		targetNames = append(targetNames, t.name)
	}
	ahead := newPrefetcher(m, targetNames)
	defer ahead.wait()
	compute := func(t *target) (*moduleResult, error) {
		mu.Lock()
		r := results[t.module]
		mu.Unlock()
		r.once.Do(func() {
			ahead.next(t.name)
			r.f, r.note, r.err = factorTarget(m, t, o)
			if r.err != nil {
				r.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, r.err)
				return
			}
			rep := baseReport(t)
			rep.Note = joinNotes(r.note, t.note)
			rep.Rank, rep.RelError, rep.Energy = r.f.Rank, r.f.RelError, r.f.Energy
			rep.LeftDense = o.Format == "factored" && !SavesParameters(t.m, t.n, r.f.Rank)
			if o.Format == "dense" || rep.LeftDense {
				rep.Kept = rep.Params
			} else {
				rep.Kept = int64(r.f.Rank) * int64(t.m+t.n)
			}
			if rep.LeftDense {
				rep.RelError, rep.Energy = 0, 1
			}
			mu.Lock()
			reports[t.name] = rep
			mu.Unlock()
		})
		return r, r.err
	}
	release := func(t *target) {
		mu.Lock()
		defer mu.Unlock()
		r := results[t.module]
		r.parts--
		if r.parts <= 0 {
			r.f = nil // free the factors once every part is written
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		ref, ok := refs[e.Name]
		if !ok {
			x, done, err := pass(ctx, e)
			if err != nil || x.DType == e.DType {
				return x, done, err
			}
			c, err := x.ConvertTo(e.DType)
			done()
			return c, nil, err
		}
		t := ref.t
		r, err := compute(t)
		if err != nil {
			return nil, nil, err
		}
		defer release(t)
		f := r.f
		leftDense := !SavesParameters(t.m, t.n, f.Rank)
		switch ref.field {
		case "weight":
			if o.Format == "factored" {
				if !leftDense {
					return nil, nil, nil // optional: the factors are written instead
				}
				return convertedView(m, e)
			}
			x, err := tensors.New(e.Name, e.DType, t.shape)
			if err != nil {
				return nil, nil, err
			}
			err = encodeProduct(x.Data, e.DType, t.mod, f.B, f.A, t.m, f.Rank, t.n, nil)
			return x, nil, err
		case "bias":
			if leftDense {
				return convertedView(m, e)
			}
			return nil, nil, nil
		case "A", "B":
			if leftDense {
				return nil, nil, nil
			}
			s0, s1 := factorShapes(t.mod, t.shape, f.Rank)
			da, db := factorData(t.mod, f)
			if ref.field == "A" {
				x, err := tensors.FromFloat32(e.Name, e.DType, s0, da)
				return x, nil, err
			}
			x, err := tensors.FromFloat32(e.Name, e.DType, s1, db)
			return x, nil, err
		case "Bbias":
			if leftDense {
				return nil, nil, nil
			}
			b, err := m.Tensor(t.mod.Bias().Tensor)
			if err != nil {
				return nil, nil, err
			}
			b, err = b.ConvertTo(e.DType)
			if err != nil {
				return nil, nil, err
			}
			return &tensors.Tensor{Name: e.Name, DType: b.DType, Shape: b.Shape, Data: b.Data}, nil, nil
		}
		return nil, nil, fmt.Errorf("unexpected output tensor %q", e.Name)
	}
	if wopts, err = svdWriteOptions(m, wopts, o.Progress); err != nil {
		return nil, nil, err
	}
	if wopts, err = m.WithDType(wopts, o.DType); err != nil {
		return nil, nil, err
	}
	var list []TensorReport
	collect := func() {
		list = list[:0]
		for _, t := range targets {
			if r := reports[t.name]; r != nil {
				list = append(list, *r)
			}
		}
	}
	if o.Format == "factored" {
		wopts.Metadata = withCompressionMetadata(wopts.Metadata, o)
		wopts.MetadataFor = rankMetadata(factorOf)
		if !checkpoint.IsSingleFile(out) {
			// compression.json is written from the reports each shard's
			// state holds, so parts and resumed runs give the same file
			wopts.State = &checkpoint.State{Finalizer: compressFinalizer, Save: func(dir string, shard []safetensors.Entry) error {
				st := compressState{Method: o.Method}
				mu.Lock()
				for _, e := range shard {
					name := e.Name // a target left as it is keeps its name
					if ref, ok := refs[e.Name]; ok {
						name = ref.t.name
					}
					if rep := reports[name]; rep != nil && !slices.ContainsFunc(st.Reports, func(r TensorReport) bool { return r.Name == name }) {
						r := *rep
						r.RelError, r.Energy = jsonSafe(r.RelError), jsonSafe(r.Energy)
						st.Reports = append(st.Reports, r)
					}
				}
				mu.Unlock()
				return saveShardState(dir, st)
			}}
		}
	}
	written, err := checkpoint.Write(ctx, out, entries, produce, wopts)
	if err != nil {
		return nil, nil, checkpoint.ExplainNonFinite(err, m)
	}
	collect()
	return list, written, nil
}

// compressState is what a shard of a factored directory output keeps for
// compression.json: the reports of the modules it holds.
type compressState struct {
	Method  string         `json:"method"`
	Reports []TensorReport `json:"reports"`
}

const compressFinalizer = "lowrank.compress"

func init() { checkpoint.RegisterFinalizer(compressFinalizer, finalizeCompress) }

// finalizeCompress writes compression.json from every shard's reports.
func finalizeCompress(dir, _ string, states []string) error {
	var method string
	var list []TensorReport
	for _, s := range states {
		var st compressState
		if err := loadShardState(s, &st); err != nil {
			return fmt.Errorf("compression state %s: %w", s, err)
		}
		method = st.Method
		for _, r := range st.Reports {
			if !slices.ContainsFunc(list, func(x TensorReport) bool { return x.Name == r.Name }) {
				list = append(list, r)
			}
		}
	}
	slices.SortFunc(list, func(a, b TensorReport) int { return strings.Compare(a.Name, b.Name) })
	b, err := CompressionJSON(CompressOptions{Method: method}, list)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "compression.json"), b, 0o644)
}

// baseReport fills in what a report says about a target before its
// factorisation.
func baseReport(t *target) *TensorReport {
	return &TensorReport{Name: t.name, Module: t.module, Kind: string(t.mod.Kind), Shape: t.shape, InFeatures: t.n, OutFeatures: t.m,
		Bias: t.hasBias, Params: int64(t.m) * int64(t.n), Note: t.note}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func convertedView(m *checkpoint.Model, e safetensors.Entry) (*tensors.Tensor, func(), error) {
	x, err := m.Tensor(e.Name)
	if err != nil {
		return nil, nil, err
	}
	c, err := x.ConvertTo(e.DType)
	return c, nil, err
}

// factorTarget loads one weight and factorises it with the chosen method.
func factorTarget(m *checkpoint.Model, t *target, o CompressOptions) (*Factorization, string, error) {
	w, err := readMatrix(m, t) // [out, in], whatever the storage order
	if err != nil {
		return nil, "", err
	}
	sc, err := scalingOf(o.Method)
	if err != nil {
		return nil, "", err
	}
	return sc.Factor(w, t, o)
}

// withCompressionMetadata records the method in __metadata__.
func withCompressionMetadata(md map[string]string, o CompressOptions) map[string]string {
	out := map[string]string{}
	for k, v := range md {
		out[k] = v
	}
	out["wtool_compression"] = o.Method
	return out
}
