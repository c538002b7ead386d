package lowrank

import (
	"context"
	"fmt"
	"math"
	"slices"

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
}

// ExtractReport describes one module of an extraction.
type ExtractReport struct {
	Module string  `json:"module"`
	Kind   string  `json:"kind"` // linear, conv1d, conv, embedding, or the tensor's kind when not captured
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
// adapter of their own. Other tensors that changed (norms, biases) are
// reported as not captured: PEFT applied to the base then differs from the
// fine-tune by them. One module's matrices are in memory at a time, as
// float32; the factors of every module until the end.
func ExtractLoRA(ctx context.Context, base, ft *checkpoint.Model, out string, o ExtractOptions, force bool) ([]ExtractReport, *peft.Adapter, error) {
	if err := o.Rule.Validate(); err != nil {
		return nil, nil, err
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
	fanInFanOut := false
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
		w := mod.Weight()
		covered[w.Tensor] = true
		rep := ExtractReport{Module: mod.Name, Kind: string(mod.Kind), Shape: w.Shape}
		if mod.TiedTo != "" {
			rep.Skipped, rep.Note = true, "tied to "+mod.TiedTo+": its adapter is that module's"
			reports = append(reports, rep)
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
			rep.Skipped, rep.Note = true, "unchanged"
			reports = append(reports, rep)
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
		reports = append(reports, rep)
		adapted = append(adapted, rep)
	}
	// what the adapter cannot carry
	for _, n := range ft.Names() {
		if covered[n] {
			continue
		}
		info, _ := ft.Info(n)
		if !info.DType.IsFloat() {
			continue
		}
		d, b, err := tensorDiff(base, ft, n)
		if err != nil {
			return nil, nil, err
		}
		if d == 0 {
			continue
		}
		rep := ExtractReport{Module: n, Kind: "tensor", Shape: info.Shape, Skipped: true, Note: "changed but not a LoRA target: not in the adapter"}
		if p, ok := a.Param(n); ok && p.Module != nil {
			rep.Kind = string(p.Module.Kind)
		}
		if b > 0 {
			rep.Change = math.Sqrt(d / b)
		}
		reports = append(reports, rep)
	}
	if len(ad.Modules) == 0 {
		return reports, nil, fmt.Errorf("%s and %s: no LoRA target changed: there is nothing to extract", base.Path, ft.Path)
	}
	byModule := func(m string) string { return peftName[m] }
	var ars []AdapterReport
	for _, r := range adapted {
		ars = append(ars, AdapterReport{Module: r.Module, Rank: r.Rank})
	}
	rk, alpha, rp, ap := adapterConfig(ars, o.Alpha, byModule)
	cfg := peft.NewConfig(rk, alpha, targetModules(ars, shortNameCounts(a), byModule))
	cfg.RankPattern, cfg.AlphaPattern = rp, ap
	if fanInFanOut {
		cfg.Extra["fan_in_fan_out"] = true
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
