package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// writeModelPLeaS runs PLeaS on two checkpoints of a family wtool's
// engine runs (ResNet, ViT, BERT, GPT-2, the Llama family): the spec from
// the architecture, joint statistics from --stats or computed on --calib,
// matching, widths (--width or --budget), the least-squares refit, the
// BatchNorm statistics recomputed on the data, and the merged checkpoint
// written with its config.json updated for the new widths. Memory: both
// models and the merged one in float32, the statistics of the modules not
// yet refit, those above fisher/nn.DefaultDeferBytes kept as their rows
// (their matrices one at a time, when read).
func writeModelPLeaS(ctx context.Context, j *Job, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	p := j.Plan
	var nets []*nn.Net
	for _, m := range j.Models {
		n, err := nn.Load(m)
		if err != nil {
			return nil, fmt.Errorf("pleas: %w", err)
		}
		nets = append(nets, n)
	}
	as, err := permute.BuildSpec(nets[0].Arch)
	if err != nil {
		return nil, fmt.Errorf("pleas: %w", err)
	}
	var data *nn.Data
	if path := p.Global("calib").Text; path != "" {
		if data, err = nn.OpenData(path, p.Global("calib_key").Text, "-"); err != nil {
			return nil, err
		}
		defer data.Close()
	}
	var js permute.JointStats
	if path := p.Global("stats").Text; path != "" {
		f, err := openJointStats(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		js = f
	} else {
		// the largest entries are accumulated when read, one at a time,
		// and every module's statistics are released once it is refit
		st, err := nn.CollectLazyStats(ctx, nets, data, nn.StatsOptions{MaxGramElems: -1}, 0)
		if err != nil {
			return nil, fmt.Errorf("pleas: statistics on %s: %w", p.Global("calib").Text, err)
		}
		js = st
		runtime.GC() // the pass's buffers
	}
	o := PLeaSModelOptions{Width: p.Float("width"), Ridge: p.Float("ridge"), SeparateHeads: p.Global("separate_heads").Bool, AverageOnly: !p.Global("refit").Bool, ReleaseStats: true}
	match := p.Global("match").Text
	if match == "weight" {
		if o.Perms, err = pleasWeightMatching(ctx, j, as.Spec); err != nil {
			return nil, err
		}
	} else {
		if o.Perms, err = activationPerms(ctx, as, nets[0], nets[1], js); err != nil {
			return nil, err
		}
	}
	if b := p.Float("budget"); b > 0 {
		bud, err := AllocateWidths(as, nets[0], js, o.Perms, Budget{Ratio: b, Kind: BudgetKind(p.Global("budget_kind").Text)})
		if err != nil {
			return nil, err
		}
		o.Widths = bud.Widths
		j.Note("PLeaS: %s budget %g: the merged model costs %.4g times one source; widths %s", bud.Kind, b, bud.Ratio, strings.Join(budgetWidths(bud.Widths), " "))
	}
	res, err := PLeaSModel(ctx, as, nets[0], nets[1], js, o)
	if err != nil {
		return nil, err
	}
	tm := nn.TensorMap{}
	for k, v := range res.Tensors {
		tm[k] = v
	}
	cfg, cfgBytes, err := mergedConfig(j.Models[0], nets[0].Arch, res, p)
	if err != nil {
		return nil, err
	}
	extra := map[string]*tensors.Tensor{}
	hasBN := slices.ContainsFunc(nets[0].Arch.Modules, func(m *arch.Module) bool { return m.Kind == arch.BatchNorm })
	if hasBN && p.Global("reset_bn").Bool {
		if data == nil {
			return nil, fmt.Errorf("pleas: the models have BatchNorm layers, whose statistics are recomputed on data: give --calib (the training images), or --reset-bn=false")
		}
		merged, err := nn.FromTensors(cfg, tm)
		if err != nil {
			return nil, fmt.Errorf("pleas: the merged model: %w", err)
		}
		bn, err := nn.RecomputeBatchNorm(ctx, merged, data, nn.BNOptions{})
		if err != nil {
			return nil, fmt.Errorf("pleas: BatchNorm statistics: %w", err)
		}
		for _, t := range bn {
			if t.DType.IsFloat() {
				v, _ := merged.Tensor(t.Name)
				if tm[t.Name], err = tensors.FromFloat32(t.Name, tensors.F32, t.Shape, v); err != nil {
					return nil, err
				}
			} else {
				extra[t.Name] = t
			}
		}
		j.Note("PLeaS: BatchNorm statistics recomputed on %d samples", data.N)
	} else if hasBN {
		j.Note("PLeaS: BatchNorm statistics averaged, not recomputed (--reset-bn=false)")
	}
	j.Note("PLeaS: %s matching, %d modules refit, widths %s", match, len(res.Refit), groupSummary(res.Groups))
	if len(res.Groups) > 0 {
		j.Report.Width = res.Groups[0].Width
	}
	return writeTensors(ctx, j, tm, extra, cfgBytes, out, opts)
}

// mergedConfig returns the merged model's config.json (parsed and as
// bytes; nil when the model has none): the widths the family's config
// gives (a ResNet's stem and stage widths; a transformer's
// intermediate_size and head counts when every layer has the same; the
// classes with separate heads) and the merge recorded under "wtool_merge"
// with every group's width.
func mergedConfig(m *checkpoint.Model, a *arch.Arch, res *PLeaSModelResult, p *Plan) (*arch.Config, []byte, error) {
	raw := map[string]any{}
	if a.Config != nil {
		b, err := json.Marshal(a.Config.Raw)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(b, &raw); err != nil {
			return nil, nil, err
		}
	}
	widths := map[string]int{}
	for _, g := range res.Groups {
		widths[g.Group] = g.Width
	}
	// what config.json says about the widths, by what each group is
	shape := func(tensor string, axis int) (int, bool) {
		t, ok := res.Tensors[tensor]
		if !ok || axis >= len(t.Shape) {
			return 0, false
		}
		return int(t.Shape[axis]), true
	}
	uniform := func(key string, vals []int) {
		if len(vals) == 0 {
			return
		}
		if _, ok := raw[key]; !ok {
			return
		}
		if slices.Min(vals) == slices.Max(vals) {
			raw[key] = vals[0]
		} else {
			raw[key+"_per_layer"] = vals // not loadable by transformers: noted
		}
	}
	switch a.Family {
	case "resnet":
		var stages []int
		var stem int
		for _, md := range a.Modules {
			if md.Kind == arch.Conv && md.Layer < 0 {
				stem, _ = shape(md.Weight().Tensor, 0)
			}
		}
		seen := map[int]bool{}
		for _, md := range a.Modules {
			if md.Layer >= 0 && md.Stage > 0 && !seen[md.Stage] {
				// the stage's width: the last block's last convolution
				var last *arch.Module
				for _, x := range a.Modules {
					if x.Stage == md.Stage && x.Kind == arch.Conv && x.Role != arch.RoleShortcut {
						last = x
					}
				}
				if w, ok := shape(last.Weight().Tensor, 0); ok {
					stages = append(stages, w)
				}
				seen[md.Stage] = true
			}
		}
		if _, ok := raw["widths"]; ok && len(stages) > 0 {
			raw["widths"] = stages
		}
		if _, ok := raw["stem"]; ok && stem > 0 {
			raw["stem"] = stem
		}
	default:
		var inter, heads, kv []int
		for _, md := range a.Modules {
			if md.Role == arch.RoleMLPDown { // every layer's MLP, every expert's
				if w, ok := shape(md.Weight().Tensor, inAxis(md)); ok {
					inter = append(inter, w)
				}
			}
		}
		for _, at := range a.Attentions() {
			q, _ := a.Space(at.Q)
			k, _ := a.Space(at.K)
			if q == nil || k == nil || q.HeadDim == 0 {
				continue
			}
			hw := widths[strings.TrimSuffix(at.Out, "."+lastPart(at.Out))+".heads"]
			if hw == 0 {
				continue
			}
			kv = append(kv, hw)
			heads = append(heads, hw*q.Heads/k.Heads)
		}
		uniform("intermediate_size", inter)
		uniform("n_inner", inter)
		uniform("num_attention_heads", heads)
		uniform("n_head", heads)
		if _, ok := raw["num_key_value_heads"]; ok {
			uniform("num_key_value_heads", kv)
		}
		if len(heads) > 0 && !raw_has(raw, "head_dim") && a.Hidden > 0 {
			// transformers derives head_dim from hidden_size / heads: pin it
			for _, at := range a.Attentions() {
				if q, _ := a.Space(at.Q); q != nil && q.HeadDim > 0 {
					if a.Hidden != q.Heads*q.HeadDim || slices.Max(heads) != q.Heads {
						raw["head_dim"] = q.HeadDim
					}
					break
				}
			}
		}
	}
	if p.Global("separate_heads").Bool {
		for _, k := range []string{"num_classes", "num_labels"} {
			if v, ok := raw[k].(float64); ok {
				raw[k] = int(v) * 2
			}
		}
	}
	rec := map[string]any{"method": "pleas", "width": p.Float("width"), "match": p.Global("match").Text, "widths": widths}
	if b := p.Float("budget"); b > 0 {
		rec["budget"], rec["budget_kind"] = b, p.Global("budget_kind").Text
	}
	if p.Global("separate_heads").Bool {
		rec["separate_heads"] = true
	}
	raw["wtool_merge"] = rec
	b, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	b = append(b, '\n')
	cfg, err := arch.ParseConfig(b)
	if err != nil {
		return nil, nil, err
	}
	if a.Config == nil && (m.Dir == "" || !fileExists(filepath.Join(m.Dir, "config.json"))) {
		return cfg, nil, nil
	}
	return cfg, b, nil
}

func raw_has(raw map[string]any, k string) bool { _, ok := raw[k]; return ok }

func lastPart(s string) string {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// writeTensors writes merged float32 tensors (and extra tensors as they
// are) as a checkpoint like the first input model: each tensor in its
// dtype there (or the plan's output dtype), the first model's other
// tensors copied when their shape is unchanged, config.json replaced.
func writeTensors(ctx context.Context, j *Job, tm nn.TensorMap, extra map[string]*tensors.Tensor, cfg []byte, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	first := j.Models[0]
	opts, err := j.WriteOptions(opts)
	if err != nil {
		return nil, err
	}
	byName := map[string]*tensors.Tensor{}
	for k, t := range extra {
		byName[k] = t
	}
	for k, t := range tm {
		dt := j.OutDType
		if dt == 0 {
			if info, ok := first.Info(k); ok && info.DType.IsFloat() {
				dt = info.DType
			} else {
				dt = tensors.F32
			}
		}
		v, err := t.Float32()
		if err != nil {
			return nil, err
		}
		for i, x := range v {
			if x != x || x > 3.4e38 || x < -3.4e38 {
				return nil, fmt.Errorf("pleas: tensor %q: non-finite value at %d", k, i)
			}
		}
		if byName[k], err = tensors.FromFloat32(k, dt, t.Shape, v); err != nil {
			return nil, err
		}
	}
	// the first model's other tensors (buffers, counters) as they are
	for _, n := range first.Names() {
		if _, ok := byName[n]; ok {
			continue
		}
		t, err := first.Tensor(n)
		if err != nil {
			return nil, err
		}
		byName[n] = t
	}
	var entries []safetensors.Entry
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		t := byName[n]
		entries = append(entries, safetensors.Entry{Name: n, DType: t.DType, Shape: t.Shape})
	}
	if cfg != nil && !checkpoint.IsSingleFile(out) {
		if opts.Files == nil {
			opts.Files = map[string][]byte{}
		}
		opts.Files["config.json"] = cfg
	}
	if opts, err = first.WithDType(opts, j.OutDType); err != nil {
		return nil, err
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		return byName[e.Name], nil, nil
	}
	return checkpoint.Write(ctx, out, entries, produce, opts)
}
