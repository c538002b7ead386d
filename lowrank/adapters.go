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
	"github.com/wtool/wtool/io/fsafe"
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
	compute := func(t *adapterTarget) error {
		t.once.Do(func() {
			x, err := m.Tensor(t.name)
			if err != nil {
				t.err = err
				return
			}
			w, err := x.Float32()
			m.Release(t.name)
			if err != nil {
				t.err = err
				return
			}
			var a *AdapterInit
			switch o.Method {
			case "pissa":
				a, err = PiSSA(w, t.m, t.n, o.Rule, o.Alpha, o.SVD)
			case "sorsa":
				a, err = SORSA(w, t.m, t.n, o.Rule, o.SVD)
			default:
				a, err = SVFit(w, t.m, t.n, o.Rule, o.SVD)
			}
			if err != nil {
				t.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, err)
				return
			}
			t.init = a
			t.report = AdapterReport{Module: t.module, Shape: t.shape, Rank: a.Rank, Energy: a.Energy}
			var wn, rn float64
			for i, v := range w {
				wn += float64(v) * float64(v)
				rn += float64(a.Residual[i]) * float64(a.Residual[i])
			}
			if wn > 0 {
				t.report.ResidualNorm = math.Sqrt(rn / wn)
			}
		})
		return t.err
	}
	spill, err := newSpill(out)
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
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		if t := targets[e.Name]; t != nil { // the residual
			if err := compute(t); err != nil {
				return nil, nil, err
			}
			res, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, t.init.Residual)
			if err != nil {
				return nil, nil, err
			}
			back, _ := res.Float32()
			var d, n float64
			for i, v := range t.init.Residual {
				x := float64(back[i]) - float64(v)
				d += x * x
				n += float64(v) * float64(v)
			}
			if n > 0 {
				t.report.CastError = math.Sqrt(d / n)
			}
			if o.Method == "pissa" { // the factors go to the adapter, after
				mu.Lock()
				err = spill.add(peft.Key(t.module, "lora_A"), []int64{int64(t.init.Rank), int64(t.n)}, t.init.A)
				if err == nil {
					err = spill.add(peft.Key(t.module, "lora_B"), []int64{int64(t.m), int64(t.init.Rank)}, t.init.B)
				}
				mu.Unlock()
				if err != nil {
					return nil, nil, err
				}
			}
			done(t)
			return res, nil, nil
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
			if t.report.Module != "" { // computed by this run
				out = append(out, t.report)
			}
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
	// The adapter file and the configs are written from what each shard's
	// state keeps (the reports, and for PiSSA the factors of the modules
	// whose residual the shard holds), so parts and resumed runs give the
	// same files as a single run.
	wopts.State = &checkpoint.State{Finalizer: adapterFinalizer, Save: func(dir string, shard []safetensors.Entry) error {
		st := adapterState{Method: o.Method, Alpha: o.Alpha}
		var lora []string
		mu.Lock()
		for _, e := range shard {
			t := targets[e.Name]
			if t == nil {
				if ref, ok := factorOf[e.Name]; ok {
					t = ref.t
				}
			}
			if t == nil || t.report.Module == "" || slices.ContainsFunc(st.Reports, func(r AdapterReport) bool { return r.Module == t.module }) {
				continue
			}
			r := t.report
			r.Energy, r.ResidualNorm, r.CastError = jsonSafe(r.Energy), jsonSafe(r.ResidualNorm), jsonSafe(r.CastError)
			st.Reports = append(st.Reports, r)
			if o.Method == "pissa" && targets[e.Name] != nil {
				lora = append(lora, peft.Key(t.module, "lora_A"), peft.Key(t.module, "lora_B"))
			}
		}
		var err error
		if o.Method == "pissa" {
			err = spill.writeTo(filepath.Join(dir, "lora.safetensors"), lora, nil)
		}
		mu.Unlock()
		if err != nil {
			return err
		}
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "reports.json"), b, 0o644)
	}}
	written, err := checkpoint.Write(ctx, out, entries, produce, wopts)
	if err != nil {
		return nil, nil, checkpoint.ExplainNonFinite(err, m)
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

// adapterState is what a shard keeps for the adapter's files: the reports
// of the modules it holds (and, for PiSSA, their factors in lora.safetensors
// beside it).
type adapterState struct {
	Method  string          `json:"method"`
	Alpha   float64         `json:"alpha"`
	Reports []AdapterReport `json:"reports"`
}

const adapterFinalizer = "lowrank.adapter"

func init() { checkpoint.RegisterFinalizer(adapterFinalizer, finalizeAdapters) }

// finalizeAdapters writes the PiSSA adapter directory, or the SORSA/SVFit
// config, from every shard's state.
func finalizeAdapters(dir string, states []string) error {
	var o AdapterOptions
	var rs []AdapterReport
	var lora []string
	for _, s := range states {
		var st adapterState
		b, err := os.ReadFile(filepath.Join(s, "reports.json"))
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil {
			return fmt.Errorf("adapter state %s: %w", s, err)
		}
		o.Method, o.Alpha = st.Method, st.Alpha
		for _, r := range st.Reports {
			if !slices.ContainsFunc(rs, func(x AdapterReport) bool { return x.Module == r.Module }) {
				rs = append(rs, r)
			}
		}
		if p := filepath.Join(s, "lora.safetensors"); st.Method == "pissa" {
			lora = append(lora, p)
		}
	}
	slices.SortFunc(rs, func(a, b AdapterReport) int { return strings.Compare(a.Module+".weight", b.Module+".weight") })
	if o.Method == "pissa" {
		return writePiSSAAdapter(filepath.Join(dir, "adapter"), lora, rs, o)
	}
	return writeSVDConfig(dir, rs, o)
}

func writePiSSAAdapter(dir string, lora []string, rs []AdapterReport, o AdapterOptions) error {
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
	return mergeSafetensors(filepath.Join(dir, peft.WeightsFile), lora, map[string]string{"format": "pt"})
}

// mergeSafetensors writes one file holding every tensor of the files srcs
// (whose names must differ), one tensor in memory at a time.
func mergeSafetensors(path string, srcs []string, metadata map[string]string) error {
	var entries []safetensors.Entry
	from := map[string]*safetensors.File{}
	for _, p := range srcs {
		f, err := safetensors.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, t := range f.Header.Tensors {
			if _, dup := from[t.Name]; dup {
				continue // a module computed by two parts: the same factors
			}
			from[t.Name] = f
			entries = append(entries, safetensors.Entry{Name: t.Name, DType: t.DType, Shape: t.Shape})
		}
	}
	w, err := safetensors.Create(path, entries, metadata)
	if err != nil {
		return err
	}
	for _, e := range w.Order() {
		info, _ := from[e.Name].Header.Lookup(e.Name)
		buf := make([]byte, info.Size())
		if err := from[e.Name].ReadTensor(e.Name, buf); err != nil {
			w.Abort()
			return err
		}
		if err := w.Write(&tensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: buf}); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
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

// newSpill creates the spill file beside the output out, named like its
// temporaries (so one a killed run leaves is cleaned like them).
func newSpill(out string) (*spill, error) {
	f, err := fsafe.CreateTemp(out, "spill")
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

// writeTo writes the named spilled tensors to a safetensors file.
func (s *spill) writeTo(path string, names []string, metadata map[string]string) error {
	var entries []safetensors.Entry
	byName := map[string]spillEntry{}
	for _, e := range s.entries {
		if slices.Contains(names, e.name) {
			entries = append(entries, safetensors.Entry{Name: e.name, DType: tensors.F32, Shape: e.shape})
			byName[e.name] = e
		}
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

func (s *spill) remove() { fsafe.RemoveTemp(s.f) }
