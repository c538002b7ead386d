package lowrank

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/arch"
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
	Targets []*regexp.Regexp // weight tensors (default: the architecture's default targets)
	SVD     SVDOptions
	// Arch describes the model (nil: arch.Open(m)).
	Arch *arch.Arch
	// Progress, if set, is called as tensors are written.
	Progress func(done, total int64)
}

// AdapterReport describes one target module.
type AdapterReport struct {
	Module string  `json:"module"`
	Kind   string  `json:"kind"` // linear, conv1d, conv, embedding
	Shape  []int64 `json:"shape"`
	Rank   int     `json:"rank"`
	Energy float64 `json:"energy"` // kept fraction of the squared singular values
	// ResidualNorm is ||residual|| / ||W||.
	ResidualNorm float64 `json:"residual_norm"`
	// CastError is ||cast(residual) - residual|| / ||residual||: what storing
	// the residual in the model's dtype (bf16, say) changes.
	CastError float64 `json:"cast_error"`
	// Skipped modules are left as they were, without an adapter (the rank
	// does not fit the matrix); Note says why, or what a tie means.
	Skipped bool   `json:"skipped,omitempty"`
	Note    string `json:"note,omitempty"`
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
	*target
	bound  int
	once   sync.Once
	w      []float32 // the weight in the module's orientation, until the residual is written
	init   *AdapterInit
	wNorm2 float64
	report AdapterReport
	err    error
	parts  int // output tensors of this target still to produce
	index  int // position among the targets
	// reported is set once the factorisation filled in the report (a
	// resumed run or a part computes only some targets)
	reported bool
}

// adaptable: the modules an adapter can be attached to (PEFT's LoRA layers
// for Linear, Conv1D with fan_in_fan_out, Embedding, Conv2d).
func adaptable(m *arch.Module) bool {
	switch m.Kind {
	case arch.Linear, arch.Conv1D, arch.Embedding:
		return true
	case arch.Conv:
		return len(m.Kernel) == 2
	}
	return false
}

// InitAdapters initialises SVD-based adapters for the target weights of m
// and writes them to the directory out, streaming one matrix at a time:
//
//   - pissa: out is the residual model (same layout and dtypes as m, its
//     config and tokenizer files copied) and out/adapter a PEFT LoRA adapter
//     (adapter_model.safetensors, F32 factors, and adapter_config.json with
//     init_lora_weights true, PiSSA's scaling, fan_in_fan_out for Conv1D
//     targets, the task type and base model path, and for energy ranks
//     PEFT's rank_pattern/alpha_pattern) such that residual + (alpha/r) B A
//     = W in each module's own orientation. The factors have the shapes PEFT
//     creates: lora_A [r, in] and lora_B [out, r] for Linear and Conv1D,
//     lora_embedding_A [r, num] and lora_embedding_B [dim, r] for an
//     Embedding, lora_A [r, in, kh, kw] and lora_B [out, r, 1, 1] for a
//     Conv2d; keys use the module paths of the model class (PEFTModule).
//   - sorsa, svfit: out is one checkpoint: every tensor of m, the target
//     weights replaced by their residuals, plus per module the F32 factors
//     in the module's orientation (M.sorsa_A/_S/_B or M.svfit_Vt/_S/_U), and
//     sorsa_config.json or svfit_config.json describing them.
//
// Residuals are computed in float64 from the weights and rounded once to the
// model's dtype; the report says how much that rounding changes them.
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
	a, err := openArch(m, o.Arch)
	if err != nil {
		return nil, nil, err
	}
	ts, err := findTargets(m, a, targetSelection{patterns: o.Targets, rule: o.Rule, allowed: adaptable, what: "adapt"})
	if err != nil {
		return nil, nil, err
	}
	targets := map[string]*adapterTarget{}
	var order []*adapterTarget
	for _, t := range ts {
		at := &adapterTarget{target: t, bound: t.fixedRank, parts: 1, index: len(order)}
		at.report = AdapterReport{Module: t.module, Kind: string(t.mod.Kind), Shape: t.shape, Note: t.note, Skipped: t.skip}
		order = append(order, at)
		if t.skip {
			continue
		}
		if o.Method != "pissa" {
			at.parts = 4
		}
		if t.fixedRank == 0 {
			at.bound = min(t.m, t.n)
		}
		targets[t.name] = at
	}
	if len(targets) == 0 {
		return nil, nil, fmt.Errorf("%s: no module to adapt at this rank: %s", m.Path, order[0].report.Note)
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
			if t.skip {
				continue
			}
			k := int64(t.bound)
			entries = append(entries,
				safetensors.Entry{Name: t.module + names[0], DType: tensors.F32, Shape: []int64{k, int64(t.n)}, Bounded: t.fixedRank == 0},
				safetensors.Entry{Name: t.module + names[1], DType: tensors.F32, Shape: []int64{k}, Bounded: t.fixedRank == 0},
				safetensors.Entry{Name: t.module + names[2], DType: tensors.F32, Shape: []int64{int64(t.m), k}, Bounded: t.fixedRank == 0})
			for _, f := range names {
				if m.Has(t.module + f) {
					return nil, nil, fmt.Errorf("the model already has a tensor %q", t.module+f)
				}
				factorOf[t.module+f] = factorRef{t, f}
			}
		}
	}
	var names []string
	for name := range targets {
		names = append(names, name)
	}
	ahead := newPrefetcher(m, names)
	defer ahead.wait()
	var setAside func(t *adapterTarget) error // SORSA and SVFit, below
	compute := func(t *adapterTarget) error {
		t.once.Do(func() {
			ahead.next(t.name)
			w, err := readMatrix(m, t.target) // [out, in]
			if err != nil {
				t.err = err
				return
			}
			var ai *AdapterInit
			switch o.Method {
			case "pissa":
				ai, err = pissaFactors(w, t.m, t.n, t.rule, o.Alpha, o.SVD)
			default: // sorsa, svfit: the same split
				ai, err = svdStyle(w, t.m, t.n, t.rule, o.SVD)
			}
			if err != nil {
				t.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, err)
				return
			}
			t.init, t.w = ai, w
			for _, v := range w {
				t.wNorm2 += float64(v) * float64(v)
			}
			t.report.Rank, t.report.Energy = ai.Rank, ai.Energy
			t.reported = true
			if setAside != nil {
				t.err = setAside(t)
			}
		})
		return t.err
	}
	// the adapter's factors are spilled to a file beside the output until
	// they can be written in their own file's order
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
			t.init, t.w = nil, nil
		}
	}
	// residual computes a target's residual as its output entry e and
	// releases the weight.
	residual := func(t *adapterTarget, e safetensors.Entry) (*tensors.Tensor, error) {
		ai := t.init
		res, err := tensors.New(e.Name, e.DType, e.Shape)
		if err != nil {
			return nil, err
		}
		n2, c2, err := residualInto(res.Data, e.DType, t.mod, t.w, ai.B, ai.A, t.m, ai.Rank, t.n, ai.scales())
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", e.Name, err)
		}
		if t.wNorm2 > 0 {
			t.report.ResidualNorm = math.Sqrt(n2 / t.wNorm2)
		}
		if n2 > 0 {
			t.report.CastError = math.Sqrt(c2 / n2)
		}
		mu.Lock()
		t.w = nil
		mu.Unlock()
		return res, nil
	}
	// SORSA and SVFit write their float32 factors before the residuals
	// (safetensors orders a file's tensors by dtype, then name), so each
	// weight is read long before its residual's entry is written: the
	// residual waits in a temporary file, encoded, rather than the weight
	// in memory (a shard's worth of weights otherwise).
	residuals, err := newByteSpill(filepath.Dir(filepath.Clean(out)))
	if err != nil {
		return nil, nil, err
	}
	defer residuals.remove()
	if o.Method != "pissa" {
		entryOf := map[string]safetensors.Entry{}
		for _, e := range entries {
			entryOf[e.Name] = e
		}
		setAside = func(t *adapterTarget) error {
			res, err := residual(t, entryOf[t.name])
			if err != nil {
				return err
			}
			return residuals.put(res)
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		if t := targets[e.Name]; t != nil { // the residual
			if err := compute(t); err != nil {
				return nil, nil, err
			}
			if o.Method != "pissa" { // computed with the factors, set aside
				defer done(t)
				x, err := residuals.take(e)
				return x, nil, err
			}
			ai := t.init
			res, err := residual(t, e)
			if err != nil {
				return nil, nil, err
			}
			if o.Method == "pissa" { // the factors go to the adapter, after
				ka, kb := peft.KeysFor(a.PEFTModule(t.module), t.mod.Kind == arch.Embedding)
				sa, sb := loraShapes(t.mod, t.shape, ai.Rank)
				mu.Lock()
				err = spill.add(ka, sa, ai.A)
				if err == nil {
					err = spill.add(kb, sb, ai.B)
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
		ai := t.init
		defer done(t)
		switch ref.field {
		case SORSAA, SVFitV:
			x, err := tensors.FromFloat32(e.Name, tensors.F32, []int64{int64(ai.Rank), int64(t.n)}, ai.A)
			return x, nil, err
		case SORSAB, SVFitU:
			x, err := tensors.FromFloat32(e.Name, tensors.F32, []int64{int64(t.m), int64(ai.Rank)}, ai.B)
			return x, nil, err
		}
		x, err := tensors.FromFloat64(e.Name, tensors.F32, []int64{int64(ai.Rank)}, ai.S)
		return x, nil, err
	}
	reports := func() []AdapterReport {
		var out []AdapterReport
		for _, t := range order {
			if t.skip || t.reported { // a resumed run or a part computes some
				out = append(out, t.report)
			}
		}
		return out
	}
	if wopts, err = svdWriteOptions(m, wopts, o.Progress); err != nil {
		return nil, nil, err
	}
	// The adapter directory and the configs are written from what each
	// shard's state keeps (the reports of the modules it holds, and for
	// PiSSA their factors), so parts and resumed runs give the same files
	// as a single run.
	byName := map[string]*adapterTarget{}
	for _, t := range order {
		byName[t.name] = t
	}
	shorts := shortNameCounts(a)
	wopts.State = &checkpoint.State{Finalizer: adapterFinalizer, Save: func(dir string, shard []safetensors.Entry) error {
		st := adapterState{Method: o.Method, Alpha: o.Alpha, TaskType: a.TaskType(), Shorts: shorts, PEFT: map[string]string{}}
		var lora []string
		mu.Lock()
		for _, e := range shard {
			t := byName[e.Name]
			if ref, ok := factorOf[e.Name]; ok {
				t = ref.t
			}
			if t == nil || !(t.skip || t.reported) || slices.ContainsFunc(st.Reports, func(r adapterStateReport) bool { return r.Module == t.module }) {
				continue
			}
			r := t.report
			r.Energy, r.ResidualNorm, r.CastError = jsonSafe(r.Energy), jsonSafe(r.ResidualNorm), jsonSafe(r.CastError)
			st.Reports = append(st.Reports, adapterStateReport{AdapterReport: r, Index: t.index})
			st.PEFT[t.module] = a.PEFTModule(t.module)
			if o.Method == "pissa" && !t.skip && e.Name == t.name {
				ka, kb := peft.KeysFor(a.PEFTModule(t.module), t.mod.Kind == arch.Embedding)
				lora = append(lora, ka, kb)
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
		return saveShardState(dir, st)
	}}
	written, err := checkpoint.Write(ctx, out, entries, produce, wopts)
	if err != nil {
		return nil, nil, checkpoint.ExplainNonFinite(err, m)
	}
	return reports(), written, nil
}

// loraShapes returns the shapes of PEFT's LoRA factors for a module at rank
// k: [k, in] and [out, k], or for a Conv2d [k, in, kh, kw] and [out, k, 1, 1].
func loraShapes(mod *arch.Module, shape []int64, k int) ([]int64, []int64) {
	if mod.Kind == arch.Conv {
		return factorShapes(mod, shape, k)
	}
	out, in := mod.MatrixShape()
	return []int64{int64(k), int64(in)}, []int64{int64(out), int64(k)}
}

// adapted returns the reports of the modules that got an adapter.
func adapted(rs []AdapterReport) []AdapterReport {
	var out []AdapterReport
	for _, r := range rs {
		if !r.Skipped {
			out = append(out, r)
		}
	}
	return out
}

// adapterConfig returns r, alpha and the rank/alpha patterns for the
// reports: the most common rank is r, the others go to the patterns, keyed
// by name(module).
func adapterConfig(rs []AdapterReport, alpha float64, name func(string) string) (int, float64, map[string]int, map[string]float64) {
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
			rp[name(x.Module)] = x.Rank
			if alpha <= 0 {
				ap[name(x.Module)] = alphaOf(x.Rank)
			}
		}
	}
	return r, alphaOf(r), rp, ap
}

// targetModules returns PEFT's target_modules for the adapted modules: their
// short names when those select exactly the adapted modules of the model
// (PEFT matches a short name against every module path ending in it), else
// the full module paths.
func targetModules(rs []AdapterReport, shorts map[string]int, name func(string) string) []string {
	var short, full []string
	chosen := map[string]int{} // chosen modules by last component
	for _, r := range rs {
		full = append(full, name(r.Module))
		s := r.Module[strings.LastIndex(r.Module, ".")+1:]
		chosen[s]++
		if !slices.Contains(short, s) {
			short = append(short, s)
		}
	}
	// the short names select exactly the chosen modules when no other
	// module path of the model (a module with parameters, or a container
	// holding them: layer1.0, a ResNet block, ends in "0" as downsample.0
	// does) ends with one of them
	exact := true
	for _, s := range short {
		if shorts[s] != chosen[s] {
			exact = false
		}
	}
	if exact {
		slices.Sort(short)
		return short
	}
	slices.Sort(full)
	return full
}

// shortNameCounts counts the module paths of the model (the modules with
// parameters and the containers holding them) by their last component.
func shortNameCounts(a *arch.Arch) map[string]int {
	paths := map[string]bool{}
	for _, m := range a.Modules {
		if m.Kind == arch.Bare || m.Kind == arch.Buffer {
			continue
		}
		for p := m.Name; p != ""; p = p[:max(strings.LastIndex(p, "."), 0)] {
			paths[p] = true
		}
	}
	counts := map[string]int{}
	for p := range paths {
		counts[p[strings.LastIndex(p, ".")+1:]]++
	}
	return counts
}

// adapterState is what a shard keeps for the adapter's files: the reports
// of the modules it holds (with their position among the targets and their
// PEFT module paths), and what the PEFT config needs of the architecture.
// PiSSA's factors of those modules are in lora.safetensors beside it.
type adapterState struct {
	Method   string               `json:"method"`
	Alpha    float64              `json:"alpha"`
	TaskType string               `json:"task_type,omitempty"`
	Reports  []adapterStateReport `json:"reports"`
	PEFT     map[string]string    `json:"peft_modules"`
	// Shorts counts the model's module paths by their last component,
	// which decides whether short target_modules names are unambiguous.
	Shorts map[string]int `json:"short_names"`
}

type adapterStateReport struct {
	AdapterReport
	Index int `json:"index"`
}

const adapterFinalizer = "lowrank.adapter"

func init() { checkpoint.RegisterFinalizer(adapterFinalizer, finalizeAdapters) }

// finalizeAdapters writes the PiSSA adapter directory, or the SORSA/SVFit
// config, from every shard's state.
func finalizeAdapters(dir, out string, states []string) error {
	var st adapterState
	var all []adapterStateReport
	peftOf := map[string]string{}
	var lora []string
	for _, s := range states {
		var one adapterState
		if err := loadShardState(s, &one); err != nil {
			return fmt.Errorf("adapter state %s: %w", s, err)
		}
		st.Method, st.Alpha, st.TaskType, st.Shorts = one.Method, one.Alpha, one.TaskType, one.Shorts
		for _, r := range one.Reports {
			if !slices.ContainsFunc(all, func(x adapterStateReport) bool { return x.Module == r.Module }) {
				all = append(all, r)
			}
		}
		maps.Copy(peftOf, one.PEFT)
		if one.Method == "pissa" {
			lora = append(lora, filepath.Join(s, "lora.safetensors"))
		}
	}
	slices.SortFunc(all, func(a, b adapterStateReport) int { return a.Index - b.Index })
	rs := make([]AdapterReport, len(all))
	for i, r := range all {
		rs[i] = r.AdapterReport
	}
	o := AdapterOptions{Method: st.Method, Alpha: st.Alpha}
	if o.Method != "pissa" {
		return writeSVDConfig(dir, rs, o)
	}
	base, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	return writePiSSAAdapter(filepath.Join(dir, "adapter"), lora, rs, func(m string) string { return peftOf[m] }, st.Shorts, st.TaskType, base, o)
}

// writePiSSAAdapter writes the PEFT adapter directory: adapter_config.json
// and adapter_model.safetensors merged from the shards' factor files.
func writePiSSAAdapter(dir string, lora []string, all []AdapterReport, name func(string) string, shorts map[string]int, taskType, base string, o AdapterOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rs := adapted(all)
	r, alpha, rp, ap := adapterConfig(rs, o.Alpha, name)
	cfg := peft.NewConfig(r, alpha, targetModules(rs, shorts, name))
	cfg.RankPattern, cfg.AlphaPattern = rp, ap
	for _, x := range rs {
		if x.Kind == string(arch.Conv1D) {
			cfg.Extra["fan_in_fan_out"] = true // PEFT's Conv1D (GPT-2) layers store [in, out]
		}
	}
	cfg.Extra["base_model_name_or_path"] = base // the residual model the adapter completes
	if taskType != "" {
		cfg.Extra["task_type"] = taskType
	}
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
// (a tensor in several is taken once), one tensor in memory at a time.
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

func writeSVDConfig(dir string, all []AdapterReport, o AdapterOptions) error {
	rs := adapted(all)
	same := func(s string) string { return s }
	r, alpha, rp, _ := adapterConfig(rs, o.Alpha, same)
	var short []string
	for _, x := range rs {
		s := x.Module[strings.LastIndex(x.Module, ".")+1:]
		if !slices.Contains(short, s) {
			short = append(short, s)
		}
	}
	slices.Sort(short)
	kinds := map[string]string{}
	var mods []string
	for _, x := range rs {
		mods = append(mods, x.Module)
		kinds[x.Module] = x.Kind
	}
	doc := map[string]any{"method": o.Method, "r": r, "target_modules": short, "rank_pattern": rp, "modules": mods, "kinds": kinds,
		"orientation": "factors are in each module's own orientation [out, in] (a Conv1D's [in, out] weight and an Embedding's [num, dim] transposed, a convolution's flattened to [out, in*kh*kw]); M.weight is stored as the model stores it"}
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
