package lowrank

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// ExtractOptions configure ExtractLoRA.
type ExtractOptions struct {
	// Rule chooses each module's rank (--rank, --ratio, --energy); a rank
	// larger than a matrix allows is that matrix's full rank.
	Rule RankRule
	// Alpha is lora_alpha; 0 gives each module alpha = its rank (scaling 1).
	Alpha float64
	SVD   SVDOptions
	// Arch describes the models (nil: arch.Open of the fine-tune).
	Arch *arch.Arch
	// Progress, if set, is called after each module with the modules done
	// and in total.
	Progress func(done, total int)
	// Embeddings is "lora" (or ""): embeddings get lora_embedding_A/B like
	// any module; or "save": every Embedding and the output head of the
	// vocabulary (lm_head) that changed is stored whole in modules_to_save
	// (mergekit-extract-lora's default, --no-embed-lora).
	Embeddings string
	// NoBias leaves changed biases of LoRA modules out of the adapter
	// (reported as not captured) instead of storing them as lora_B.bias
	// with lora_bias true.
	NoBias bool
}

// Kinds of ExtractReport entries for what is stored beside the factors.
const (
	// ExtractSaved is a tensor of a module stored whole in modules_to_save.
	ExtractSaved = "saved"
	// ExtractBias is a LoRA module's bias change stored as lora_B.bias.
	ExtractBias = "bias"
)

// ExtractReport describes one module of an extraction.
type ExtractReport struct {
	Module string  `json:"module"`
	Kind   string  `json:"kind"` // linear, conv1d, conv, embedding; saved, bias; or the tensor's kind when not captured
	Shape  []int64 `json:"shape"`
	Rank   int     `json:"rank,omitempty"`
	// Energy is the fraction of the difference's squared Frobenius norm the
	// adapter captures.
	Energy float64 `json:"energy"`
	// RelError is ||D - scaling B A||_F / ||D||_F, D the fine-tune minus the
	// base in the module's orientation.
	RelError float64 `json:"rel_error"`
	// Change is ||D||_F / ||base||_F.
	Change float64 `json:"change"`
	// Skipped: no adapter for the module (unchanged, or not a LoRA target:
	// Note says which, and what the adapter then misses).
	Skipped bool   `json:"skipped,omitempty"`
	Note    string `json:"note,omitempty"`
}

// ExtractLoRA writes to out a PEFT LoRA adapter of the difference between
// a fine-tune and its base (mergekit-extract-lora): for every Linear,
// Conv1D, 2-D convolution and Embedding module whose weight changed, the
// truncated SVD of D = W_ft - W_base in the module's orientation [out, in]
// gives D ~ scaling B A with B = U sqrt(S) (alpha/r)^-1 and A = sqrt(S) V^T
// — the best rank-r approximation (Eckart-Young) — stored as PEFT loads it
// (lora_A [r, in] / lora_B [out, r]; lora_embedding_A [r, num] /
// lora_embedding_B [dim, r]; a convolution's A as [r, in, kh, kw] and B as
// [out, r, 1, 1]); per-module ranks and alphas go into rank_pattern and
// alpha_pattern. Tied modules (a head tied to the embeddings) have no
// adapter of their own.
//
// What the factors cannot carry goes beside them, as PEFT loads it:
//   - a LoRA module's bias change Db: lora_B.bias = Db / scaling with
//     lora_bias true (PEFT adds lora_B.bias * scaling, in the forward pass
//     and when merging: tuners/lora/layer.py); every LoRA module but
//     embeddings then gets a lora_B.bias (zeros where its bias did not
//     change or it has none). PEFT refuses lora_bias with an Embedding LoRA,
//     so with embedding factors (Embeddings "lora") bias changes are
//     reported as not captured, as with NoBias;
//   - every other module with a changed tensor (norms, a module whose
//     weight did not change but its bias did, with Embeddings "save" the
//     embeddings and the vocabulary head) is stored whole in
//     modules_to_save: all of its fine-tuned tensors under
//     base_model.model.<module>.<param>, the module names in the config
//     (short names when, matched as PEFT matches them, a plain suffix of
//     the module path, they select exactly the saved modules);
//   - a head tied to a saved embedding gets a copy of its weight under its
//     own name and ensure_weight_tying true, as PEFT saves and loads it;
//   - bare parameters and buffers (a ViT's cls_token), which PEFT cannot
//     save without their parent module, are reported as not captured:
//     PEFT applied to the base then differs from the fine-tune by them.
//
// One module's matrices are in memory at a time, as float32; the factors
// of every module, the biases and the saved tensors until the end.
func ExtractLoRA(ctx context.Context, base, ft *checkpoint.Model, out string, o ExtractOptions, force bool) ([]ExtractReport, *peft.Adapter, error) {
	if err := o.Rule.Validate(); err != nil {
		return nil, nil, err
	}
	if o.Embeddings != "" && o.Embeddings != "lora" && o.Embeddings != "save" {
		return nil, nil, fmt.Errorf("embeddings %q: want lora or save", o.Embeddings)
	}
	if err := checkpoint.SameArchitecture(base, ft); err != nil {
		return nil, nil, fmt.Errorf("the base and the fine-tune differ: %w", err)
	}
	a, err := openArch(ft, o.Arch)
	if err != nil {
		return nil, nil, err
	}
	ad := &peft.Adapter{Modules: map[string]*peft.Module{}}
	var reports, adapted []ExtractReport
	covered := map[string]bool{}
	peftName := map[string]string{}
	scaling := map[string]float64{} // LoRA modules (by arch name): alpha / r
	var loraMods []*arch.Module
	fanInFanOut := false
	saveEmb := o.Embeddings == "save"
	vocabHead := vocabHeads(a)
	for i, mod := range a.Modules {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if o.Progress != nil {
			o.Progress(i, len(a.Modules))
		}
		if !adaptable(mod) || mod.Weight() == nil {
			continue
		}
		if saveEmb && (mod.Kind == arch.Embedding || vocabHead[mod]) && mod.TiedTo == "" {
			continue // stored whole below
		}
		w := mod.Weight()
		covered[w.Tensor] = true
		rep := ExtractReport{Module: mod.Name, Kind: string(mod.Kind), Shape: w.Shape}
		if mod.TiedTo != "" {
			if !saveEmb { // else reported with the tied module's saved weight
				rep.Skipped, rep.Note = true, "tied to "+mod.TiedTo+": its adapter is that module's"
				reports = append(reports, rep)
			}
			continue
		}
		wb, rows, cols, err := moduleMatrix(base, mod, w.Tensor)
		if err != nil {
			return nil, nil, err
		}
		wf, _, _, err := moduleMatrix(ft, mod, w.Tensor)
		if err != nil {
			return nil, nil, err
		}
		var dd, bb float64
		for k := range wf {
			wf[k] -= wb[k]
			dd += float64(wf[k]) * float64(wf[k])
			bb += float64(wb[k]) * float64(wb[k])
		}
		wb = nil
		if dd > 0 && bb > 0 {
			rep.Change = math.Sqrt(dd / bb)
		}
		if dd == 0 {
			// no factors; if the module's other tensors changed, it is
			// saved whole
			rep.Skipped, rep.Note = true, "unchanged"
			reports = append(reports, rep)
			covered[w.Tensor] = false
			continue
		}
		rule := o.Rule
		if rule.Rank > min(rows, cols) {
			rule.Rank = min(rows, cols)
		}
		f, err := SVDFactorize(wf, rows, cols, rule, o.SVD)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", mod.Name, err)
		}
		r := f.Rank
		alpha := o.Alpha
		if alpha <= 0 {
			alpha = float64(r)
		}
		// PEFT adds (alpha/r) B A: B carries the inverse scaling
		if s := float32(float64(r) / alpha); s != 1 {
			for k := range f.B {
				f.B[k] *= s
			}
		}
		rep.Rank, rep.Energy, rep.RelError = r, f.Energy, f.RelError
		name := a.PEFTModule(mod.Name)
		peftName[mod.Name] = name
		scaling[mod.Name] = alpha / float64(r)
		var ashape, bshape []int64
		switch mod.Kind {
		case arch.Conv:
			ashape = append([]int64{int64(r)}, w.Shape[1:]...)
			bshape = []int64{int64(rows), int64(r), 1, 1}
		default:
			ashape = []int64{int64(r), int64(cols)}
			bshape = []int64{int64(rows), int64(r)}
		}
		if mod.Kind == arch.Conv1D {
			fanInFanOut = true
		}
		ka, kb := peft.KeysFor(name, mod.Kind == arch.Embedding)
		at, err := tensors.FromFloat32(ka, tensors.F32, ashape, f.A)
		if err != nil {
			return nil, nil, err
		}
		bt, err := tensors.FromFloat32(kb, tensors.F32, bshape, f.B)
		if err != nil {
			return nil, nil, err
		}
		ad.Modules[name] = &peft.Module{Name: name, A: at, B: bt, Embedding: mod.Kind == arch.Embedding}
		loraMods = append(loraMods, mod)
		reports = append(reports, rep)
		adapted = append(adapted, rep)
	}
	if len(ad.Modules) == 0 {
		return reports, nil, fmt.Errorf("%s and %s: no LoRA target changed: there is nothing to extract", base.Path, ft.Path)
	}
	biasReps, loraBias, err := extractBiases(base, ft, ad, loraMods, peftName, scaling, o.NoBias, covered)
	if err != nil {
		return nil, nil, err
	}
	reports = append(reports, biasReps...)
	savedReps, toSave, err := extractSaved(base, ft, a, ad, covered)
	if err != nil {
		return nil, nil, err
	}
	reports = append(reports, savedReps...)
	// a saved embedding with a head tied to it: PEFT ties the head's copy
	// to the embedding's with ensure_weight_tying (LoraModel's
	// _add_modules_to_save_to_tie: the tied modules get a wrapper sharing
	// the embedding's weight), and loads it from <head>.weight like any
	// saved module
	tiedSaved := false
	for _, t := range a.Ties {
		x, ok := ad.Saved[a.PEFTModule(t.To)+".weight"]
		if !ok {
			continue
		}
		head := a.PEFTModule(t.Module) + ".weight"
		ad.Saved[head] = &tensors.Tensor{Name: peft.SavedKey(head), DType: x.DType, Shape: x.Shape, Data: x.Data}
		tiedSaved = true
		reports = append(reports, ExtractReport{Module: t.Module + ".weight", Kind: ExtractSaved, Shape: x.Shape, Energy: 1,
			Note: "tied to " + t.To + ": a copy of its saved weight, ensure_weight_tying"})
	}
	byModule := func(m string) string { return peftName[m] }
	var ars []AdapterReport
	for _, r := range adapted {
		ars = append(ars, AdapterReport{Module: r.Module, Rank: r.Rank})
	}
	rk, alpha, rp, ap := adapterConfig(ars, o.Alpha, byModule)
	cfg := peft.NewConfig(rk, alpha, targetModules(ars, shortNameCounts(a), byModule))
	cfg.RankPattern, cfg.AlphaPattern = rp, ap
	cfg.LoraBias, cfg.ModulesToSave = loraBias, toSave
	if fanInFanOut {
		cfg.Extra["fan_in_fan_out"] = true
	}
	if tiedSaved {
		cfg.Extra["ensure_weight_tying"] = true
	}
	cfg.Extra["base_model_name_or_path"] = base.Path
	if tt := a.TaskType(); tt != "" {
		cfg.Extra["task_type"] = tt
	}
	ad.Config = cfg
	if err := peft.WriteWith(ctx, out, ad, checkpoint.WriteOptions{Force: force, Inputs: append(append([]string{base.Path, ft.Path}, base.Files()...), ft.Files()...)}); err != nil {
		return nil, nil, err
	}
	if o.Progress != nil {
		o.Progress(len(a.Modules), len(a.Modules))
	}
	slices.SortStableFunc(reports, func(x, y ExtractReport) int {
		return map[bool]int{false: 0, true: 1}[x.Skipped] - map[bool]int{false: 0, true: 1}[y.Skipped]
	})
	return reports, ad, nil
}

// vocabHeads returns the output heads over the vocabulary (lm_head: a
// head as wide as the token embedding is long), which mergekit-extract-lora
// treats as embeddings (get_output_embeddings).
func vocabHeads(a *arch.Arch) map[*arch.Module]bool {
	vocab := 0
	for _, m := range a.Modules {
		if m.Kind == arch.Embedding && m.Role == arch.RoleEmbedding && m.Weight() != nil && len(m.Weight().Shape) == 2 {
			vocab = int(m.Weight().Shape[0])
		}
	}
	out := map[*arch.Module]bool{}
	for _, m := range a.Modules {
		if m.Role == arch.RoleHead && m.Kind == arch.Linear && vocab > 0 && m.OutFeatures == vocab {
			out[m] = true
		}
	}
	return out
}

// extractBiases stores the bias changes of the LoRA modules as lora_B.bias
// (see ExtractLoRA) and reports them; it marks their tensors covered and
// returns whether the adapter has lora_bias.
func extractBiases(base, ft *checkpoint.Model, ad *peft.Adapter, mods []*arch.Module, peftName map[string]string, scaling map[string]float64, noBias bool, covered map[string]bool) ([]ExtractReport, bool, error) {
	type change struct {
		mod  *arch.Module
		d    []float64
		rep  ExtractReport
		zero bool
	}
	var changes []change
	embLoRA := false
	for _, mod := range mods {
		if mod.Kind == arch.Embedding {
			embLoRA = true
		}
		p := mod.Param("bias")
		if p == nil {
			continue
		}
		covered[p.Tensor] = true
		vb, err := tensorValues(base, p.Tensor)
		if err != nil {
			return nil, false, err
		}
		vf, err := tensorValues(ft, p.Tensor)
		if err != nil {
			return nil, false, err
		}
		if len(vb) != len(vf) {
			return nil, false, fmt.Errorf("tensor %q: %d values in %s, %d in %s", p.Tensor, len(vb), base.Path, len(vf), ft.Path)
		}
		var dd, bb float64
		for k := range vf {
			vf[k] -= vb[k]
			dd += vf[k] * vf[k]
			bb += vb[k] * vb[k]
		}
		rep := ExtractReport{Module: p.Tensor, Kind: ExtractBias, Shape: p.Shape}
		if bb > 0 {
			rep.Change = math.Sqrt(dd / bb)
		}
		changes = append(changes, change{mod: mod, d: vf, rep: rep, zero: dd == 0})
	}
	changed := slices.ContainsFunc(changes, func(c change) bool { return !c.zero })
	if !changed || noBias || embLoRA {
		var reps []ExtractReport
		for _, c := range changes {
			if c.zero {
				continue
			}
			c.rep.Kind, c.rep.Skipped = "bias", true
			switch {
			case noBias:
				c.rep.Note = "bias of a LoRA module, changed: not in the adapter (lora_bias not asked for)"
			default:
				c.rep.Note = "bias of a LoRA module, changed: not in the adapter (PEFT refuses lora_bias with embedding factors: --embeddings save)"
			}
			reps = append(reps, c.rep)
		}
		return reps, false, nil
	}
	// lora_bias: every LoRA layer but embeddings has lora_B.bias
	byMod := map[*arch.Module]change{}
	for _, c := range changes {
		byMod[c.mod] = c
	}
	var reps []ExtractReport
	for _, mod := range mods {
		if mod.Kind == arch.Embedding {
			continue
		}
		name := peftName[mod.Name]
		m := ad.Modules[name]
		out := m.B.Shape[0]
		v := make([]float32, out)
		c, ok := byMod[mod]
		if ok && !c.zero {
			if int64(len(c.d)) != out {
				return nil, false, fmt.Errorf("tensor %q: %d values for a module of %d outputs", c.rep.Module, len(c.d), out)
			}
			s := scaling[mod.Name]
			var ee, dd float64
			for k, d := range c.d {
				v[k] = float32(d / s)
				e := d - s*float64(v[k])
				ee += e * e
				dd += d * d
			}
			c.rep.Energy, c.rep.RelError = 1, math.Sqrt(ee/dd)
			reps = append(reps, c.rep)
		}
		t, err := tensors.FromFloat32(peft.BiasKey(name), tensors.F32, []int64{out}, v)
		if err != nil {
			return nil, false, err
		}
		m.Bias = t
	}
	return reps, true, nil
}

// extractSaved stores whole, in modules_to_save, every module without
// factors that has a changed tensor (see ExtractLoRA), marks its tensors
// covered and reports them and the changed tensors it cannot store. It
// returns the modules_to_save names.
func extractSaved(base, ft *checkpoint.Model, a *arch.Arch, ad *peft.Adapter, covered map[string]bool) ([]ExtractReport, []string, error) {
	var reps []ExtractReport
	var save []*arch.Module
	changes := map[string]float64{}
	queued := map[*arch.Module]bool{}
	for _, n := range ft.Names() {
		if covered[n] {
			continue
		}
		info, _ := ft.Info(n)
		p, ok := a.Param(n)
		var mod *arch.Module
		if ok {
			mod = p.Module
		}
		if !info.DType.IsFloat() {
			continue
		}
		d, b, err := tensorDiff(base, ft, n)
		if err != nil {
			return nil, nil, err
		}
		if b > 0 {
			changes[n] = math.Sqrt(d / b)
		}
		if d == 0 {
			continue
		}
		switch {
		case mod == nil || mod.Kind == arch.Bare || mod.Kind == arch.Buffer || mod.Kind == arch.Unknown:
			rep := ExtractReport{Module: n, Kind: "tensor", Shape: info.Shape, Change: changes[n], Skipped: true,
				Note: "changed, not a module's tensor (PEFT's modules_to_save takes modules): not in the adapter"}
			if mod != nil {
				rep.Kind = string(mod.Kind)
			}
			reps = append(reps, rep)
		case mod.TiedTo != "":
			reps = append(reps, ExtractReport{Module: n, Kind: string(mod.Kind), Shape: info.Shape, Change: changes[n], Skipped: true,
				Note: "changed, of a module tied to " + mod.TiedTo + ": not in the adapter"})
		case !queued[mod]:
			queued[mod] = true
			save = append(save, mod)
		}
	}
	if len(save) == 0 {
		return reps, nil, nil
	}
	names, bad := modulesToSave(a, save)
	for _, mod := range save {
		for _, p := range mod.Params {
			covered[p.Tensor] = true
			info, _ := ft.Info(p.Tensor)
			rep := ExtractReport{Module: p.Tensor, Kind: ExtractSaved, Shape: info.Shape, Change: changes[p.Tensor], Energy: 1}
			if bad[mod] {
				rep.Kind, rep.Skipped = string(mod.Kind), true
				rep.Note = "changed, but PEFT's modules_to_save cannot select module " + a.PEFTModule(mod.Name) + " alone: not in the adapter"
				reps = append(reps, rep)
				continue
			}
			x, err := ft.Tensor(p.Tensor)
			if err != nil {
				return nil, nil, err
			}
			var data []byte
			err = safetensors.Guard(info.File, p.Tensor, func() error {
				data = slices.Clone(x.Data)
				return nil
			})
			ft.Release(p.Tensor)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: tensor %q: %w", ft.Path, p.Tensor, err)
			}
			if ad.Saved == nil {
				ad.Saved = map[string]*tensors.Tensor{}
			}
			key := a.PEFTModule(mod.Name) + "." + p.Name
			ad.Saved[key] = &tensors.Tensor{Name: peft.SavedKey(key), DType: x.DType, Shape: slices.Clone(x.Shape), Data: data}
			reps = append(reps, rep)
		}
	}
	return reps, names, nil
}

// modulesToSave returns PEFT's modules_to_save for the modules to save:
// per group of modules sharing a last path component, that component when
// it selects exactly the group, else their paths; bad are the modules no
// name selects alone (another module's path ends with theirs).
func modulesToSave(a *arch.Arch, save []*arch.Module) ([]string, map[*arch.Module]bool) {
	// every module path PEFT's named_modules visits: the modules, their
	// parents, and the wrapper's own (base_model, base_model.model)
	paths := map[string]bool{"base_model": true, "base_model.model": true}
	for _, m := range a.Modules {
		if m.Kind == arch.Bare || m.Kind == arch.Buffer {
			continue
		}
		for p := a.PEFTModule(m.Name); p != ""; p = p[:max(strings.LastIndex(p, "."), 0)] {
			paths[p] = true
		}
	}
	selects := func(name string) []string {
		var out []string
		for p := range paths {
			if peft.SavedBy([]string{name}, p) || (p == "base_model" && strings.HasSuffix(p, name)) {
				out = append(out, p)
			}
		}
		slices.Sort(out)
		return out
	}
	groups := map[string][]string{}
	var order []string
	byPath := map[string]*arch.Module{}
	for _, m := range save {
		p := a.PEFTModule(m.Name)
		byPath[p] = m
		s := p[strings.LastIndex(p, ".")+1:]
		if _, ok := groups[s]; !ok {
			order = append(order, s)
		}
		groups[s] = append(groups[s], p)
	}
	var names []string
	bad := map[*arch.Module]bool{}
	for _, s := range order {
		g := slices.Sorted(slices.Values(groups[s]))
		if slices.Equal(selects(s), g) {
			names = append(names, s)
			continue
		}
		for _, p := range g {
			if slices.Equal(selects(p), []string{p}) {
				names = append(names, p)
			} else {
				bad[byPath[p]] = true
			}
		}
	}
	slices.Sort(names)
	return names, bad
}

// tensorValues reads a whole tensor as float64.
func tensorValues(m *checkpoint.Model, name string) ([]float64, error) {
	x, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	defer m.Release(name)
	if !x.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q is %s, not floating", m.Path, name, x.DType)
	}
	v := make([]float64, len(x.Data)/(x.DType.Bits()/8))
	info, _ := m.Info(name)
	if err := safetensors.Guard(info.File, name, func() error { return tensors.DecodeFloat64(v, x.Data, x.DType) }); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
	}
	return v, nil
}

// moduleMatrix reads a module's weight in a model as its [out, in] matrix
// (float32), inside safetensors.Guard.
func moduleMatrix(m *checkpoint.Model, mod *arch.Module, name string) ([]float32, int, int, error) {
	x, err := m.Tensor(name)
	if err != nil {
		return nil, 0, 0, err
	}
	defer m.Release(name)
	info, _ := m.Info(name)
	var mat []float32
	var rows, cols int
	err = safetensors.Guard(info.File, name, func() error {
		var err error
		mat, rows, cols, err = mod.Matrix(x)
		if err == nil {
			mat = slices.Clone(mat) // never alias the mapped bytes
		}
		return err
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
	}
	return mat, rows, cols, nil
}

// tensorDiff returns ||ft - base||^2 and ||base||^2 of a tensor, decoded
// block by block.
func tensorDiff(base, ft *checkpoint.Model, name string) (dd, bb float64, err error) {
	xb, err := base.Tensor(name)
	if err != nil {
		return 0, 0, err
	}
	xf, err := ft.Tensor(name)
	if err != nil {
		return 0, 0, err
	}
	if xb.DType != xf.DType || !slices.Equal(xb.Shape, xf.Shape) {
		return 0, 0, fmt.Errorf("tensor %q: %s%v in %s but %s%v in %s", name, xb.DType, xb.Shape, base.Path, xf.DType, xf.Shape, ft.Path)
	}
	es := xb.DType.Bits() / 8
	n := len(xb.Data) / es
	const block = 1 << 16
	vb, vf := make([]float64, block), make([]float64, block)
	err = safetensors.Guard("", name, func() error {
		for lo := 0; lo < n; lo += block {
			hi := min(n, lo+block)
			if err := tensors.DecodeFloat64(vb[:hi-lo], xb.Data[lo*es:hi*es], xb.DType); err != nil {
				return err
			}
			if err := tensors.DecodeFloat64(vf[:hi-lo], xf.Data[lo*es:hi*es], xf.DType); err != nil {
				return err
			}
			for k := range hi - lo {
				d := vf[k] - vb[k]
				dd += d * d
				bb += vb[k] * vb[k]
			}
		}
		return nil
	})
	return dd, bb, err
}
