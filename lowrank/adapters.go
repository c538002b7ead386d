package lowrank

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// AdapterMethods are the SVD-based adapter initialisations.
var AdapterMethods = []string{"pissa", "sorsa", "svfit"}

// AdapterOptions describe an adapter initialisation of a checkpoint.
type AdapterOptions struct {
	Method  string           // pissa, sorsa or svfit
	Rule    RankRule         // rank (Rank) or energy (Energy); Ratio is accepted too
	Alpha   float64          // PEFT lora_alpha (pissa; sorsa records it); 0 means alpha = r
	Targets []*regexp.Regexp // default: every 2-D weight but embeddings and the output head
	SVD     SVDOptions
	// Progress, if set, is called as tensors are written.
	Progress func(done, total int64)
}

// AdapterReport describes one adapted module.
type AdapterReport struct {
	Module       string  `json:"module"`
	Shape        []int64 `json:"shape"`
	Rank         int     `json:"rank"`
	Energy       float64 `json:"energy"`        // kept fraction of the squared singular values
	ResidualNorm float64 `json:"residual_norm"` // ||residual|| / ||W||
	// CastError is ||cast(residual) - residual|| / ||residual||: what storing
	// the residual in the model's dtype (bf16, say) changes.
	CastError float64 `json:"cast_error"`
}

// Tensor names of the SORSA and SVFit layouts (module M).
const (
	SORSAA = ".sorsa_A"  // V_r^T, r x in, trainable
	SORSAS = ".sorsa_S"  // singular values, r, trainable
	SORSAB = ".sorsa_B"  // U_r, out x r, trainable
	SVFitV = ".svfit_Vt" // V_r^T, r x in, frozen
	SVFitS = ".svfit_S"  // singular values, r, trainable
	SVFitU = ".svfit_U"  // U_r, out x r, frozen
)

// adapterTarget is one weight to adapt.
type adapterTarget struct {
	name, module string
	shape        []int64
	m, n, bound  int
	fixed        bool
	once         sync.Once
	init         *AdapterInit
	report       AdapterReport
	err          error
	parts        int // output tensors of this target still to produce
}

// InitAdapters initialises SVD-based adapters for the target weights of m
// and writes them to the directory out, streaming one matrix at a time:
//
//   - pissa: out is the residual model (same layout and dtypes as m, its
//     config and tokenizer files copied) and out/adapter a PEFT LoRA adapter
//     (adapter_model.safetensors, F32 factors, and adapter_config.json with
//     init_lora_weights true, PiSSA's scaling and, for energy ranks, PEFT's
//     rank_pattern/alpha_pattern) such that residual + (alpha/r) B A = W.
//   - sorsa, svfit: out is one checkpoint: every tensor of m, the target
//     weights replaced by their residuals, plus per module the F32 factors
//     (M.sorsa_A/_S/_B or M.svfit_Vt/_S/_U), and sorsa_config.json or
//     svfit_config.json describing them.
//
// Residuals are computed in float64 from the float32 weights and rounded once
// to the model's dtype; the report says how much that rounding changes them.
func InitAdapters(ctx context.Context, m *checkpoint.Model, out string, o AdapterOptions, wopts checkpoint.WriteOptions) ([]AdapterReport, *checkpoint.Written, error) {
	if !slices.Contains(AdapterMethods, o.Method) {
		return nil, nil, fmt.Errorf("unknown adapter method %q (want pissa, sorsa or svfit)", o.Method)
	}
	if checkpoint.IsSingleFile(out) {
		return nil, nil, fmt.Errorf("%s: adapters are written as a model directory, not a single .safetensors file", out)
	}
	if err := o.Rule.Validate(); err != nil {
		return nil, nil, err
	}
	co := CompressOptions{Targets: o.Targets, Rule: o.Rule}
	ts, err := findTargets(m, co)
	if err != nil {
		return nil, nil, err
	}
	targets := map[string]*adapterTarget{}
	var order []*adapterTarget
	for _, t := range ts {
		if len(t.shape) != 2 {
			if len(o.Targets) > 0 {
				return nil, nil, fmt.Errorf("tensor %q %v: adapters are for Linear (2-D) weights", t.name, t.shape)
			}
			continue
		}
		at := &adapterTarget{name: t.name, module: t.module, shape: t.shape, m: t.m, n: t.n, fixed: t.fixedRank > 0, bound: t.fixedRank, parts: 1}
		if o.Method != "pissa" {
			at.parts = 4
		}
		if !at.fixed {
			at.bound = min(t.m, t.n)
		}
		targets[t.name] = at
		order = append(order, at)
	}
	if len(order) == 0 {
		return nil, nil, fmt.Errorf("%s: no 2-D weight to adapt", m.Path)
	}
	entries := m.Entries()
	type factorRef struct {
		t     *adapterTarget
		field string
	}
	factorOf := map[string]factorRef{}
	if o.Method != "pissa" {
		names := [3]string{SORSAA, SORSAS, SORSAB}
		if o.Method == "svfit" {
			names = [3]string{SVFitV, SVFitS, SVFitU}
		}
		for _, t := range order {
			k := int64(t.bound)
			entries = append(entries,
				safetensors.Entry{Name: t.module + names[0], DType: tensors.F32, Shape: []int64{k, int64(t.n)}, Bounded: !t.fixed},
				safetensors.Entry{Name: t.module + names[1], DType: tensors.F32, Shape: []int64{k}, Bounded: !t.fixed},
				safetensors.Entry{Name: t.module + names[2], DType: tensors.F32, Shape: []int64{int64(t.m), k}, Bounded: !t.fixed})
			for _, f := range names {
				factorOf[t.module+f] = factorRef{t, f}
			}
		}
	}
	var names []string
	for _, t := range order {
		names = append(names, t.name)
	}
	ahead := newPrefetcher(m, names)
	defer ahead.wait()
	var mem recycler
	var setAside func(t *adapterTarget) error // set below for SORSA and SVFit
	compute := func(t *adapterTarget) error {
		t.once.Do(func() {
			ahead.next(t.name)
			x, err := m.Tensor(t.name)
			if err != nil {
				t.err = err
				return
			}
			w := mem.floats(t.m * t.n) // becomes the residual; recycled once encoded
			err = tensors.DecodeFloat32(w, x.Data, x.DType)
			m.Release(t.name)
			if err != nil {
				mem.putFloats(w)
				t.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, err)
				return
			}
			var wn, rn float64
			for _, v := range w {
				wn += float64(v) * float64(v)
			}
			// the residual overwrites w: one matrix in memory
			var a *AdapterInit
			switch o.Method {
			case "pissa":
				a, err = pissa(w, t.m, t.n, o.Rule, o.Alpha, o.SVD, true)
			default: // sorsa, svfit
				a, err = svdStyle(w, t.m, t.n, o.Rule, o.SVD, true)
			}
			if err != nil {
				mem.putFloats(w)
				t.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, err)
				return
			}
			t.init = a
			t.report = AdapterReport{Module: t.module, Shape: t.shape, Rank: a.Rank, Energy: a.Energy}
			for _, v := range a.Residual {
				rn += float64(v) * float64(v)
			}
			if wn > 0 {
				t.report.ResidualNorm = math.Sqrt(rn / wn)
			}
			if setAside != nil {
				t.err = setAside(t)
			}
		})
		return t.err
	}
	spill, err := newSpill(filepath.Dir(filepath.Clean(out)))
	if err != nil {
		return nil, nil, err
	}
	defer spill.remove()
	var mu sync.Mutex
	// done forgets a target's factors once its last output tensor is made
	done := func(t *adapterTarget) {
		mu.Lock()
		defer mu.Unlock()
		if t.parts--; t.parts == 0 {
			t.init = nil
		}
	}
	// encodeResidual encodes a target's residual as its output entry, notes
	// what the rounding changed, and recycles the float32 matrix.
	encodeResidual := func(t *adapterTarget, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		res, release, err := mem.encode(e.Name, e.DType, e.Shape, t.init.Residual)
		if err != nil {
			return nil, nil, err
		}
		t.report.CastError, err = castError(res, t.init.Residual)
		if err != nil {
			release()
			return nil, nil, err
		}
		mem.putFloats(t.init.Residual)
		t.init.Residual = nil
		return res, release, nil
	}
	// SORSA and SVFit write their float32 factors before the residuals
	// (safetensors orders a file's tensors by dtype, then name), so each
	// residual is computed long before its entry is written: it waits in a
	// temporary file, encoded, rather than in memory.
	residuals, err := newByteSpill(filepath.Dir(filepath.Clean(out)), &mem)
	if err != nil {
		return nil, nil, err
	}
	defer residuals.remove()
	entryOf := map[string]safetensors.Entry{}
	for _, e := range entries {
		entryOf[e.Name] = e
	}
	if o.Method != "pissa" {
		setAside = func(t *adapterTarget) error {
			res, release, err := encodeResidual(t, entryOf[t.name])
			if err != nil {
				return err
			}
			defer release()
			return residuals.put(res)
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		if t := targets[e.Name]; t != nil { // the residual
			if err := compute(t); err != nil {
				return nil, nil, err
			}
			if o.Method != "pissa" { // encoded and set aside when computed
				defer done(t)
				return residuals.take(e)
			}
			res, release, err := encodeResidual(t, e)
			if err != nil {
				return nil, nil, err
			}
			// the factors go to the adapter, after
			mu.Lock()
			err = spill.add(peft.Key(t.module, "lora_A"), []int64{int64(t.init.Rank), int64(t.n)}, t.init.A)
			if err == nil {
				err = spill.add(peft.Key(t.module, "lora_B"), []int64{int64(t.m), int64(t.init.Rank)}, t.init.B)
			}
			mu.Unlock()
			if err != nil {
				release()
				return nil, nil, err
			}
			done(t)
			return res, release, nil
		}
		ref, ok := factorOf[e.Name] // SORSA / SVFit factors
		if !ok {
			return pass(ctx, e)
		}
		t := ref.t
		if err := compute(t); err != nil {
			return nil, nil, err
		}
		a := t.init
		defer done(t)
		switch ref.field {
		case SORSAA, SVFitV:
			x, err := tensors.FromFloat32(e.Name, tensors.F32, []int64{int64(a.Rank), int64(t.n)}, a.A)
			return x, nil, err
		case SORSAB, SVFitU:
			x, err := tensors.FromFloat32(e.Name, tensors.F32, []int64{int64(t.m), int64(a.Rank)}, a.B)
			return x, nil, err
		}
		x, err := tensors.FromFloat64(e.Name, tensors.F32, []int64{int64(a.Rank)}, a.S)
		return x, nil, err
	}
	reports := func() []AdapterReport {
		var out []AdapterReport
		for _, t := range order {
			out = append(out, t.report)
		}
		return out
	}
	wopts, err = m.DefaultWriteOptions(wopts)
	if err != nil {
		return nil, nil, err
	}
	wopts.Progress = o.Progress
	if wopts.Workers == 0 {
		// one matrix at a time: the SVD already uses every core, and a second
		// one in flight only doubles the memory
		wopts.Workers = 1
	}
	wopts.Finalize = func(dir string) error {
		rs := reports()
		if o.Method == "pissa" {
			return writePiSSAAdapter(filepath.Join(dir, "adapter"), spill, rs, o)
		}
		return writeSVDConfig(dir, rs, o)
	}
	written, err := checkpoint.Write(ctx, out, entries, produce, wopts)
	if err != nil {
		return nil, nil, err
	}
	return reports(), written, nil
}

// adapterConfig returns r, alpha and the rank/alpha patterns for the
// reports: the most common rank is r, the others go to the patterns.
func adapterConfig(rs []AdapterReport, alpha float64) (int, float64, map[string]int, map[string]float64) {
	count := map[int]int{}
	for _, r := range rs {
		count[r.Rank]++
	}
	r := 0
	for k, c := range count {
		if c > count[r] || (c == count[r] && k < r) {
			r = k
		}
	}
	alphaOf := func(k int) float64 {
		if alpha > 0 {
			return alpha
		}
		return float64(k)
	}
	rp, ap := map[string]int{}, map[string]float64{}
	for _, x := range rs {
		if x.Rank != r {
			rp[x.Module] = x.Rank
			if alpha <= 0 {
				ap[x.Module] = alphaOf(x.Rank)
			}
		}
	}
	return r, alphaOf(r), rp, ap
}

func shortNames(rs []AdapterReport) []string {
	var out []string
	for _, r := range rs {
		s := r.Module[strings.LastIndex(r.Module, ".")+1:]
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func writePiSSAAdapter(dir string, sp *spill, rs []AdapterReport, o AdapterOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r, alpha, rp, ap := adapterConfig(rs, o.Alpha)
	cfg := peft.NewConfig(r, alpha, shortNames(rs))
	cfg.RankPattern, cfg.AlphaPattern = rp, ap
	b, err := cfg.MarshalJSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), b, 0o644); err != nil {
		return err
	}
	return sp.writeTo(filepath.Join(dir, peft.WeightsFile), map[string]string{"format": "pt"})
}

func writeSVDConfig(dir string, rs []AdapterReport, o AdapterOptions) error {
	r, alpha, rp, _ := adapterConfig(rs, o.Alpha)
	doc := map[string]any{
		"method": o.Method, "r": r, "target_modules": shortNames(rs), "rank_pattern": rp,
		"modules": func() []string {
			var m []string
			for _, x := range rs {
				m = append(m, x.Module)
			}
			return m
		}(),
	}
	name := "sorsa_config.json"
	if o.Method == "sorsa" {
		doc["alpha"] = alpha
		doc["layout"] = "module M: M.weight is the frozen residual W_r; M.sorsa_A = V_r^T [r, in], M.sorsa_S = S_r [r], M.sorsa_B = U_r [out, r] are trainable; W = W_r + sorsa_B diag(sorsa_S) sorsa_A"
	} else {
		name = "svfit_config.json"
		doc["layout"] = "module M: M.weight is the frozen residual W_r; M.svfit_U = U_r [out, r] and M.svfit_Vt = V_r^T [r, in] are frozen, M.svfit_S = S_r [r] is trainable; W = W_r + svfit_U diag(svfit_S) svfit_Vt"
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644)
}

// spill keeps F32 tensors computed while the model streams, in a temporary
// file, until they can be written in the order their own file needs.
type spill struct {
	f       *os.File
	off     int64
	entries []spillEntry
}

type spillEntry struct {
	name  string
	shape []int64
	off   int64
	size  int64
}

func newSpill(dir string) (*spill, error) {
	f, err := os.CreateTemp(dir, ".wtool-spill-*")
	if err != nil {
		return nil, err
	}
	return &spill{f: f}, nil
}

func (s *spill) add(name string, shape []int64, v []float32) error {
	t, err := tensors.FromFloat32(name, tensors.F32, shape, v)
	if err != nil {
		return err
	}
	if _, err := s.f.WriteAt(t.Data, s.off); err != nil {
		return err
	}
	s.entries = append(s.entries, spillEntry{name, shape, s.off, int64(len(t.Data))})
	s.off += int64(len(t.Data))
	return nil
}

func (s *spill) writeTo(path string, metadata map[string]string) error {
	var entries []safetensors.Entry
	byName := map[string]spillEntry{}
	for _, e := range s.entries {
		entries = append(entries, safetensors.Entry{Name: e.name, DType: tensors.F32, Shape: e.shape})
		byName[e.name] = e
	}
	w, err := safetensors.Create(path, entries, metadata)
	if err != nil {
		return err
	}
	for _, e := range w.Order() {
		se := byName[e.Name]
		buf := make([]byte, se.size)
		if _, err := s.f.ReadAt(buf, se.off); err != nil {
			w.Abort()
			return err
		}
		if err := w.Write(&tensors.Tensor{Name: e.Name, DType: tensors.F32, Shape: e.Shape, Data: buf}); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

func (s *spill) remove() {
	s.f.Close()
	os.Remove(s.f.Name())
}
