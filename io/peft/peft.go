// Package peft reads and writes LoRA adapters in the layout Hugging Face PEFT
// loads with PeftModel.from_pretrained: a directory holding
// adapter_model.safetensors (__metadata__ {"format": "pt"}) and
// adapter_config.json. The tensors are, per module path M of the model
// class (GPT2LMHeadModel's transformer.h.0.attn.c_attn, say):
//
//	Linear, Conv1D:  base_model.model.M.lora_A.weight [r, in], base_model.model.M.lora_B.weight [out, r]
//	                 (a Conv1D with fan_in_fan_out true: in and out of the module, not of its [in, out] weight)
//	Embedding:       base_model.model.M.lora_embedding_A [r, num], base_model.model.M.lora_embedding_B [dim, r]
//	Conv2d:          lora_A.weight [r, in, kh, kw], lora_B.weight [out, r, 1, 1]
//	lora_bias true:  base_model.model.M.lora_B.bias [out] (Linear, Conv1D, Conv2d)
//	modules_to_save: base_model.model.M.<param> (weight, bias...), the whole module
//
// The last two are what PEFT's get_peft_model_state_dict saves
// (src/peft/utils/save_and_load.py): the LoRA layer's lora_B.default.bias
// with the adapter name removed (_remove_adapter_name_from_state_dict_key),
// and for a module wrapped by ModulesToSaveWrapper the keys of
// modules_to_save.default's state_dict under the wrapper's own path
// (ModulesToSaveWrapper.adapter_state_dict in src/peft/utils/other.py);
// set_peft_model_state_dict maps them back (adapter_state_dict_load_map).
//
// It also converts a trained PiSSA adapter into a plain LoRA adapter for the
// original base model, as PEFT does.
package peft

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// File names of a PEFT adapter directory.
const (
	WeightsFile = "adapter_model.safetensors"
	ConfigFile  = "adapter_config.json"
	keyPrefix   = "base_model.model."
)

// Config is a LoRA adapter_config.json. Fields wtool does not interpret are
// kept in Extra and written back unchanged.
type Config struct {
	R             int
	LoraAlpha     float64
	TargetModules []string
	RankPattern   map[string]int
	AlphaPattern  map[string]float64
	// InitLoraWeights is PEFT's init_lora_weights: true for an adapter to be
	// loaded as is (also for PiSSA residual models), or the name of an
	// initialisation.
	InitLoraWeights any
	UseRslora       bool
	// ModulesToSave is PEFT's modules_to_save: module names (not tensor
	// names) that PEFT wraps whole and loads from the adapter file. PEFT
	// selects every module whose path ends with one of them, as a plain
	// string suffix (_set_trainable: "norm" also selects input_layernorm).
	ModulesToSave []string
	// LoraBias is PEFT's lora_bias: every LoRA layer's lora_B has a bias,
	// added to the layer's output times the scaling (also when merged:
	// bias + lora_B.bias * scaling, tuners/lora/layer.py Linear.merge).
	LoraBias bool
	Extra    map[string]any
}

// NewConfig returns the configuration PEFT itself writes for a LoRA adapter
// (the fields of PEFT's own experiments' adapter_config.json).
func NewConfig(r int, alpha float64, targets []string) *Config {
	return &Config{R: r, LoraAlpha: alpha, TargetModules: targets, RankPattern: map[string]int{}, AlphaPattern: map[string]float64{},
		InitLoraWeights: true, Extra: map[string]any{
			"auto_mapping": nil, "base_model_name_or_path": nil, "bias": "none", "fan_in_fan_out": false,
			"inference_mode": false, "layers_pattern": nil, "layers_to_transform": nil, "lora_dropout": 0.0,
			"peft_type": "LORA", "revision": nil, "task_type": nil, "use_dora": false,
		}}
}

// Scaling returns the scale PEFT applies to module's B A: lora_alpha / r (or
// / sqrt(r) with rslora), with the module's rank and alpha patterns.
func (c *Config) Scaling(module string) float64 {
	r, alpha := float64(c.R), c.LoraAlpha
	if v, ok := c.RankPattern[module]; ok {
		r = float64(v)
	}
	if v, ok := c.AlphaPattern[module]; ok {
		alpha = v
	}
	if c.UseRslora {
		return alpha / math.Sqrt(r)
	}
	return alpha / r
}

// MarshalJSON writes the configuration with sorted keys and indent 2, as
// PEFT's save_pretrained does.
func (c *Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	maps.Copy(m, c.Extra)
	m["r"] = c.R
	m["lora_alpha"] = c.LoraAlpha
	m["target_modules"] = c.TargetModules
	m["rank_pattern"] = c.RankPattern
	m["alpha_pattern"] = c.AlphaPattern
	m["init_lora_weights"] = c.InitLoraWeights
	m["use_rslora"] = c.UseRslora
	m["modules_to_save"] = c.ModulesToSave // nil: null, as PEFT writes it
	m["lora_bias"] = c.LoraBias
	if c.RankPattern == nil {
		m["rank_pattern"] = map[string]int{}
	}
	if c.AlphaPattern == nil {
		m["alpha_pattern"] = map[string]float64{}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// UnmarshalJSON reads an adapter_config.json.
func (c *Config) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if t, _ := m["peft_type"].(string); t != "" && t != "LORA" {
		return fmt.Errorf("peft_type %q: only LoRA adapters are supported", t)
	}
	num := func(k string) (float64, bool) {
		v, ok := m[k].(float64)
		return v, ok
	}
	r, ok := num("r")
	if !ok || r < 1 {
		return fmt.Errorf("adapter config: r missing or invalid")
	}
	c.R = int(r)
	c.LoraAlpha, _ = num("lora_alpha")
	if c.LoraAlpha == 0 {
		c.LoraAlpha = 8 // PEFT's default
	}
	c.InitLoraWeights = m["init_lora_weights"]
	c.UseRslora, _ = m["use_rslora"].(bool)
	c.LoraBias, _ = m["lora_bias"].(bool)
	switch t := m["modules_to_save"].(type) {
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				c.ModulesToSave = append(c.ModulesToSave, s)
			}
		}
	case string:
		c.ModulesToSave = []string{t}
	}
	switch t := m["target_modules"].(type) {
	case []any:
		for _, x := range t {
			if s, ok := x.(string); ok {
				c.TargetModules = append(c.TargetModules, s)
			}
		}
	case string:
		c.TargetModules = []string{t}
	}
	c.RankPattern, c.AlphaPattern = map[string]int{}, map[string]float64{}
	if rp, ok := m["rank_pattern"].(map[string]any); ok {
		for k, v := range rp {
			if f, ok := v.(float64); ok {
				c.RankPattern[k] = int(f)
			}
		}
	}
	if ap, ok := m["alpha_pattern"].(map[string]any); ok {
		for k, v := range ap {
			if f, ok := v.(float64); ok {
				c.AlphaPattern[k] = f
			}
		}
	}
	for _, k := range []string{"r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "init_lora_weights", "use_rslora", "modules_to_save", "lora_bias"} {
		delete(m, k)
	}
	c.Extra = m
	return nil
}

// Module is one adapted module's factors: A (r x in) and B (out x r), or
// for a Conv2d A (r x in x kh x kw) and B (out x r x 1 x 1).
type Module struct {
	Name string
	A, B *tensors.Tensor
	// Embedding is set for an Embedding's factors (lora_embedding_A/B).
	Embedding bool
	// Bias is lora_B.bias [out] (lora_bias true), nil for none.
	Bias *tensors.Tensor
}

// Rank returns the module's rank.
func (m *Module) Rank() int { return int(m.A.Shape[0]) }

// Adapter is a LoRA adapter: its configuration, its modules by name and
// the tensors of its modules_to_save.
type Adapter struct {
	Config  *Config
	Modules map[string]*Module
	// Saved holds the tensors of the modules in Config.ModulesToSave, by
	// their name in the model class without the prefix
	// ("model.norm.weight"): they replace the model's tensors.
	Saved map[string]*tensors.Tensor
}

// Names returns the module names, sorted.
func (a *Adapter) Names() []string { return slices.Sorted(maps.Keys(a.Modules)) }

// Key returns the tensor name PEFT uses for a Linear, Conv1D or Conv2d
// module's factor ("lora_A" or "lora_B").
func Key(module, factor string) string { return keyPrefix + module + "." + factor + ".weight" }

// KeysFor returns the tensor names of a module's two factors: lora_A.weight
// and lora_B.weight, or for an Embedding lora_embedding_A and
// lora_embedding_B (PEFT stores those as bare parameters).
func KeysFor(module string, embedding bool) (a, b string) {
	if embedding {
		return keyPrefix + module + ".lora_embedding_A", keyPrefix + module + ".lora_embedding_B"
	}
	return Key(module, "lora_A"), Key(module, "lora_B")
}

// BiasKey returns the tensor name of a module's lora_B.bias (lora_bias).
func BiasKey(module string) string { return keyPrefix + module + ".lora_B.bias" }

// SavedKey returns the tensor name of a modules_to_save tensor given by its
// name in the model class ("model.norm.weight").
func SavedKey(tensor string) string { return keyPrefix + tensor }

// SavedBy reports whether a module path is selected by a modules_to_save
// list as PEFT selects it: its path in the PeftModel
// (base_model.model.<module>) ends with one of the names, a plain string
// suffix (_set_trainable in src/peft/utils/other.py).
func SavedBy(names []string, module string) bool {
	key := keyPrefix + module
	for _, n := range names {
		if n != "" && strings.HasSuffix(key, n) {
			return true
		}
	}
	return false
}

// savedTensor reports whether a tensor name (without the prefix) belongs to
// a module selected by names: some module path in front of its last
// component (the module or one of its parents) is.
func savedTensor(names []string, tensor string) bool {
	for i := strings.LastIndex(tensor, "."); i > 0; i = strings.LastIndex(tensor[:i], ".") {
		if SavedBy(names, tensor[:i]) {
			return true
		}
	}
	return false
}

// Read reads an adapter directory.
func Read(dir string) (*Adapter, error) {
	b, err := fsafe.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	cfg := &Config{}
	if err := json.Unmarshal(b, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	path := filepath.Join(dir, WeightsFile)
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a := &Adapter{Config: cfg, Modules: map[string]*Module{}}
	biases := map[string]*tensors.Tensor{}
	for _, info := range f.Header.Tensors {
		rest, ok := strings.CutPrefix(info.Name, keyPrefix)
		var module, factor string
		emb := false
		if ok {
			for _, sfx := range []struct {
				s, f string
				emb  bool
			}{{".lora_A.weight", "A", false}, {".lora_B.weight", "B", false}, {".lora_embedding_A", "A", true}, {".lora_embedding_B", "B", true}} {
				if m, ok2 := strings.CutSuffix(rest, sfx.s); ok2 {
					module, factor, emb = m, sfx.f, sfx.emb
					break
				}
			}
		}
		bias := ""
		if factor == "" && ok {
			if m, ok2 := strings.CutSuffix(rest, ".lora_B.bias"); ok2 {
				bias = m
			}
		}
		// with ensure_weight_tying, the modules tied to a saved embedding
		// (which PEFT finds in the model, not in the config) have their copy
		tiedCopy := cfg.Extra["ensure_weight_tying"] == true && strings.HasSuffix(rest, ".weight")
		saved := factor == "" && bias == "" && ok && (savedTensor(cfg.ModulesToSave, rest) || tiedCopy)
		if factor == "" && bias == "" && !saved {
			return nil, fmt.Errorf("%s: tensor %q is not a LoRA factor (base_model.model.<module>.lora_A/B.weight or lora_embedding_A/B), a lora_B.bias, or a tensor of the modules_to_save %q", path, info.Name, cfg.ModulesToSave)
		}
		t, err := f.Tensor(info.Name)
		if err != nil {
			return nil, err
		}
		c := &tensors.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: slices.Clone(t.Data)}
		if saved {
			if a.Saved == nil {
				a.Saved = map[string]*tensors.Tensor{}
			}
			a.Saved[rest] = c
			continue
		}
		if bias != "" {
			biases[bias] = c
			continue
		}
		mod := a.Modules[module]
		if mod == nil {
			mod = &Module{Name: module, Embedding: emb}
			a.Modules[module] = mod
		}
		if mod.Embedding != emb {
			return nil, fmt.Errorf("%s: module %q has both lora_A/B and lora_embedding_A/B factors", path, module)
		}
		if factor == "A" {
			mod.A = c
		} else {
			mod.B = c
		}
	}
	for name, b := range biases {
		m, ok := a.Modules[name]
		switch {
		case !ok || m.Embedding:
			return nil, fmt.Errorf("%s: tensor %q: a lora_B.bias of a module without lora_A/lora_B factors", path, BiasKey(name))
		case !cfg.LoraBias:
			return nil, fmt.Errorf("%s: tensor %q: a lora_B.bias but lora_bias is not true in %s (PEFT would ignore it)", path, BiasKey(name), ConfigFile)
		case len(b.Shape) != 1 || len(m.B.Shape) < 1 || b.Shape[0] != m.B.Shape[0]:
			return nil, fmt.Errorf("%s: tensor %q: shape %v, lora_B is %v", path, BiasKey(name), b.Shape, m.B.Shape)
		}
		m.Bias = b
	}
	for name, m := range a.Modules {
		if m.A == nil || m.B == nil {
			return nil, fmt.Errorf("%s: module %q lacks lora_A or lora_B", path, name)
		}
		if !chains(m.A.Shape, m.B.Shape) {
			return nil, fmt.Errorf("%s: module %q: lora_A %v and lora_B %v do not chain", path, name, m.A.Shape, m.B.Shape)
		}
	}
	return a, nil
}

// chains reports whether factor shapes fit together: [r, in] and [out, r],
// or [r, in, k...] and [out, r, 1...].
func chains(a, b []int64) bool {
	if len(a) < 2 || len(a) != len(b) || a[0] != b[1] {
		return false
	}
	for _, d := range b[2:] {
		if d != 1 {
			return false
		}
	}
	return true
}

// Write writes an adapter directory atomically (refusing to replace an
// existing one unless force).
func Write(ctx context.Context, dir string, a *Adapter, force bool) error {
	return WriteWith(ctx, dir, a, checkpoint.WriteOptions{Force: force})
}

// WriteWith writes an adapter directory atomically with the given options
// (Force, Inputs, AllowNonFinite; the layout options are the adapter's).
func WriteWith(ctx context.Context, dir string, a *Adapter, opts checkpoint.WriteOptions) error {
	cfgBytes, err := a.Config.MarshalJSON()
	if err != nil {
		return err
	}
	var entries []safetensors.Entry
	byName := map[string]*tensors.Tensor{}
	for _, name := range a.Names() {
		m := a.Modules[name]
		ka, kb := KeysFor(name, m.Embedding)
		for _, x := range []struct {
			key string
			t   *tensors.Tensor
		}{{ka, m.A}, {kb, m.B}, {BiasKey(name), m.Bias}} {
			if x.t == nil {
				continue
			}
			key := x.key
			entries = append(entries, safetensors.Entry{Name: key, DType: x.t.DType, Shape: x.t.Shape})
			byName[key] = x.t
		}
	}
	for _, name := range slices.Sorted(maps.Keys(a.Saved)) {
		t, key := a.Saved[name], SavedKey(name)
		if _, dup := byName[key]; dup {
			return fmt.Errorf("%s: tensor %q is both a LoRA factor and a modules_to_save tensor", dir, key)
		}
		entries = append(entries, safetensors.Entry{Name: key, DType: t.DType, Shape: t.Shape})
		byName[key] = t
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t := byName[e.Name]
		return &tensors.Tensor{Name: e.Name, DType: t.DType, Shape: t.Shape, Data: t.Data}, nil, nil
	}
	_, err = checkpoint.Write(ctx, dir, entries, produce, checkpoint.WriteOptions{
		Force: opts.Force, Inputs: opts.Inputs, AllowNonFinite: opts.AllowNonFinite, WeightsName: "adapter_model", MaxShardSize: 1 << 62, CopyFiles: []string{},
		Metadata: map[string]string{"format": "pt"}, Files: map[string][]byte{ConfigFile: cfgBytes}})
	return err
}

// ConvertPiSSA turns a trained PiSSA adapter into a plain LoRA adapter that
// applies to the original base model, as PEFT's
// save_pretrained(path_initial_model_for_weight_conversion=...) does: the
// change the training made is dW = s (B A - B0 A0), stored as
// lora_A = cat([A, A0], 0) and lora_B = cat([B, -B0], 1), with r and
// lora_alpha (and the rank and alpha patterns) doubled so the scaling stays
// the same. init is the adapter as initialised, trained the adapter after
// training; both must have the same modules and ranks.
func ConvertPiSSA(init, trained *Adapter) (*Adapter, error) {
	if len(init.Modules) != len(trained.Modules) {
		return nil, fmt.Errorf("the initial adapter has %d modules, the trained one %d", len(init.Modules), len(trained.Modules))
	}
	cfg := *trained.Config
	cfg.R *= 2
	cfg.LoraAlpha *= 2
	cfg.RankPattern, cfg.AlphaPattern = map[string]int{}, map[string]float64{}
	for k, v := range trained.Config.RankPattern {
		cfg.RankPattern[k] = 2 * v
	}
	for k, v := range trained.Config.AlphaPattern {
		cfg.AlphaPattern[k] = 2 * v
	}
	cfg.InitLoraWeights = true
	cfg.Extra = maps.Clone(trained.Config.Extra)
	// the PiSSA adapter completes the residual model; this one applies to
	// the original model, which the PiSSA adapter does not name
	cfg.Extra["base_model_name_or_path"] = nil
	// modules_to_save replace the model's tensors: the trained ones are as
	// valid for the original model
	out := &Adapter{Config: &cfg, Modules: map[string]*Module{}, Saved: trained.Saved}
	for name, t := range trained.Modules {
		if t.Bias != nil {
			return nil, fmt.Errorf("module %q has a lora_B.bias: converting lora_bias adapters is not supported", name)
		}
		i, ok := init.Modules[name]
		if !ok {
			return nil, fmt.Errorf("module %q is in the trained adapter but not in the initial one", name)
		}
		if !slices.Equal(i.A.Shape, t.A.Shape) || !slices.Equal(i.B.Shape, t.B.Shape) {
			return nil, fmt.Errorf("module %q: initial factors %v/%v, trained %v/%v", name, i.A.Shape, i.B.Shape, t.A.Shape, t.B.Shape)
		}
		if init.Config.Scaling(name) != trained.Config.Scaling(name) {
			return nil, fmt.Errorf("module %q: the initial and trained adapters scale differently", name)
		}
		if i.Embedding != t.Embedding {
			return nil, fmt.Errorf("module %q: an embedding adapter in one, not in the other", name)
		}
		r, o := t.Rank(), int(t.B.Shape[0])
		ta, _ := t.A.Float32()
		ia, _ := i.A.Float32()
		tb, _ := t.B.Float32()
		ib, _ := i.B.Float32()
		a := append(append([]float32{}, ta...), ia...) // rows: A then A0
		b := make([]float32, o*2*r)                    // columns: B then -B0
		for row := range o {
			copy(b[row*2*r:row*2*r+r], tb[row*r:(row+1)*r])
			for k := range r {
				b[row*2*r+r+k] = -ib[row*r+k]
			}
		}
		sa, sb := slices.Clone(t.A.Shape), slices.Clone(t.B.Shape)
		sa[0], sb[1] = int64(2*r), int64(2*r)
		ka, kb := KeysFor(name, t.Embedding)
		at, err := tensors.FromFloat32(ka, t.A.DType, sa, a)
		if err != nil {
			return nil, err
		}
		bt, err := tensors.FromFloat32(kb, t.B.DType, sb, b)
		if err != nil {
			return nil, err
		}
		out.Modules[name] = &Module{Name: name, A: at, B: bt, Embedding: t.Embedding}
	}
	return out, nil
}
