// Package arch knows, for a checkpoint, what every weight is: the module it
// belongs to, the module's kind and the orientation of its weight (Linear
// [out, in], GPT-2's Conv1D [in, out], a convolution [out, in, kh, kw], an
// Embedding [num, dim], a norm, a router, a bare parameter), the module's role
// in the model (embedding, head, attention q/k/v/o, MLP in/out, expert,
// router, norm, conv), fused weights and their segments (Phi-3's qkv_proj =
// q|k|v, GPT-2's c_attn), ties (tie_word_embeddings), the layer structure and
// the attention geometry.
//
// Every module reads one activation space and writes one (a Space: the
// residual stream, an MLP's hidden units, the query/key/value heads of one
// layer, a convolution's output channels, ...), and every parameter says which
// space each of its axes indexes. That dataflow is what permutation specs,
// RegMean, PLeaS, the low-rank operators and the PEFT writer need: a weight's
// matrix in its module's own orientation [out, in] comes from here
// (ToMatrix), never from guessing by name or shape.
//
// A model family is one file: a type implementing Family, registered in an
// init function. Open recognises the family from config.json's model_type or
// architectures, else from the tensor names, and falls back to a conservative
// generic description that says what it assumed (Arch.Notes).
//
// # Adding a family
//
// Write one file, say falcon.go, with a type implementing Family and an init
// function calling Register:
//
//   - MatchConfig recognises config.json (model_type "falcon", or an
//     architectures class); MatchNames recognises the tensor names of a
//     checkpoint without config.json (return false when another family
//     already claims the same layout).
//   - Describe declares the activation spaces (Builder.Space, Heads, Fused)
//     and adds every module with Builder.Add (name, kind, role, the spaces
//     it reads and writes) inside SetLayer/SetExpert scopes, bare parameters
//     and buffers with AddTensor, ties with Tie, and sets the geometry on
//     Builder.Arch() (Layers, Hidden, Attention, Prefix for PEFT paths).
//     Sizes come from the tensors and are checked against each other; a
//     tensor Describe leaves out is described generically, with a note.
//   - BaseClasses (optional) lists the model classes without a head (so
//     PEFT paths drop the Prefix for them).
//
// A decoder in the Llama layout is a few lines (see mistral.go); then add the
// family to testdata/families/families.py (its PyTorch modules, exact names
// and config) so the conformance suite (internal/conformance) covers it, and
// its default targets to the golden table there.
package arch

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
)

// Kind is what a module is, which fixes the layout of its weight.
type Kind string

// The module kinds.
const (
	// Linear is torch.nn.Linear: weight [out, in], y = x W^T + b.
	Linear Kind = "linear"
	// Conv1D is transformers' Conv1D (GPT-2): weight [in, out], y = x W + b.
	Conv1D Kind = "conv1d"
	// Conv is a convolution (torch.nn.Conv1d/2d/3d): weight [out, in,
	// k...], a matrix [out, in*prod(k)] acting on unfolded patches.
	Conv Kind = "conv"
	// Embedding is torch.nn.Embedding: weight [num, dim]; as a map from a
	// one-hot input it is the matrix [dim, num] (stored transposed).
	Embedding Kind = "embedding"
	// RMSNorm scales by its weight: x / rms(x) * w.
	RMSNorm Kind = "rmsnorm"
	// GemmaRMSNorm scales by one plus its weight: x / rms(x) * (1 + w).
	GemmaRMSNorm Kind = "gemma_rmsnorm"
	// LayerNorm has weight and bias (gamma and beta in old checkpoints).
	LayerNorm Kind = "layernorm"
	// BatchNorm has weight, bias and the running statistics running_mean,
	// running_var and num_batches_tracked.
	BatchNorm Kind = "batchnorm"
	// Bare is a bare trainable parameter (ViT's cls_token, a head's
	// separate bias); its module name is the tensor name.
	Bare Kind = "parameter"
	// Buffer is a stored non-trainable tensor (GPT-2's causal mask
	// attn.bias, rotary inv_freq, position_ids).
	Buffer Kind = "buffer"
	// Unknown is a tensor nothing could be said about.
	Unknown Kind = "unknown"
)

// Role is what a module does in the model.
type Role string

// The roles.
const (
	RoleEmbedding          Role = "embedding"            // token embedding
	RolePositionEmbedding  Role = "position_embedding"   // learned positions
	RoleTokenTypeEmbedding Role = "token_type_embedding" // BERT's segment embedding
	RolePatchEmbedding     Role = "patch_embedding"      // ViT's patch projection
	RoleClassToken         Role = "class_token"          // ViT's cls_token
	RoleHead               Role = "head"                 // output head: lm_head, classifier, cls.*, fc
	RolePooler             Role = "pooler"               // BERT/ViT pooler
	RoleAttnQ              Role = "attn_q"
	RoleAttnK              Role = "attn_k"
	RoleAttnV              Role = "attn_v"
	RoleAttnQKV            Role = "attn_qkv" // fused q|k|v
	RoleAttnOut            Role = "attn_out"
	RoleMLPGate            Role = "mlp_gate"
	RoleMLPUp              Role = "mlp_up" // the MLP's input projection (also of ungated MLPs)
	RoleMLPGateUp          Role = "mlp_gate_up"
	RoleMLPDown            Role = "mlp_down" // the MLP's output projection
	RoleRouter             Role = "router"   // MoE router (block_sparse_moe.gate)
	RoleNorm               Role = "norm"
	RoleConv               Role = "conv"     // a convolution of a CNN block or stem
	RoleShortcut           Role = "shortcut" // ResNet's downsample convolution
	RoleLayer              Role = "layer"    // a plain MLP's hidden layer
	RoleBuffer             Role = "buffer"
	RoleOther              Role = "other"
)

// SpaceKind says what an activation space is.
type SpaceKind string

// The space kinds. Residual, Hidden, Attention and Experts spaces are
// internal to the model (their units can be permuted consistently); Input and
// Output spaces are fixed by the data (vocabulary, pixels, labels, logits).
const (
	SpaceResidual  SpaceKind = "residual"  // a residual stream (transformers; a ResNet stage)
	SpaceHidden    SpaceKind = "hidden"    // hidden units of an MLP or a conv block
	SpaceAttention SpaceKind = "attention" // q, k, v or attention-output features (see Heads)
	SpaceExperts   SpaceKind = "experts"   // an MoE router's outputs, one per expert
	SpaceFused     SpaceKind = "fused"     // the concatenation of Parts (a fused weight's output)
	SpaceInput     SpaceKind = "input"     // the model's input (tokens, positions, pixels)
	SpaceOutput    SpaceKind = "output"    // the model's output (logits, labels)
)

// Space is an activation space: the features one module writes and others
// read.
type Space struct {
	Name string
	Kind SpaceKind
	Size int
	// Parts are, for a fused space, the spaces concatenated in order (a
	// space may appear twice: gate|up both index the MLP's hidden units).
	Parts []string `json:",omitempty"`
	// Heads and HeadDim describe an attention space: Size = Heads*HeadDim,
	// head h is features [h*HeadDim, (h+1)*HeadDim).
	Heads   int `json:",omitempty"`
	HeadDim int `json:",omitempty"`
	// Rotary is set for query/key spaces under rotary position embeddings:
	// the dimensions inside a head are paired and cannot be permuted freely.
	Rotary bool `json:",omitempty"`
}

// Param is one tensor of a module.
type Param struct {
	Tensor string   // the tensor's name in the checkpoint
	Name   string   // its name in the module: "weight", "bias", "running_mean", ... ("" for a bare parameter)
	Shape  []int64  //
	Axes   []string // per axis, the space it indexes ("" for none: a kernel or a leading singleton axis)
	Module *Module  `json:"-"`
}

// Module is one layer of the model.
type Module struct {
	// Name is the module path ("model.layers.0.self_attn.q_proj"); for a
	// bare parameter or buffer, the tensor name.
	Name string
	Kind Kind
	Role Role
	// Layer is the transformer block (or CNN block, in forward order) the
	// module belongs to, -1 outside the blocks.
	Layer int
	// Stage is a CNN stage (ResNet's layer1..layer4 are 1..4, the stem 0),
	// -1 where there are none.
	Stage int
	// Expert is the index of an MoE expert, -1 otherwise.
	Expert int
	// In and Out are the spaces the module reads and writes; a norm reads
	// and writes the space it normalises.
	In, Out string
	// InFeatures and OutFeatures are the sizes of the module's weight as a
	// matrix in its own orientation [out, in] (a convolution: in*prod(k)).
	InFeatures, OutFeatures int
	// Kernel is a convolution's kernel size.
	Kernel []int `json:",omitempty"`
	// TiedTo names the module whose weight this one shares
	// (tie_word_embeddings: lm_head is tied to the token embedding).
	TiedTo string `json:",omitempty"`
	Params []*Param
}

// Param returns the module's parameter of that name ("weight", "bias"...).
func (m *Module) Param(name string) *Param {
	for _, p := range m.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Weight returns the module's weight parameter (nil if none).
func (m *Module) Weight() *Param { return m.Param("weight") }

// Bias returns the module's bias parameter (nil if none).
func (m *Module) Bias() *Param { return m.Param("bias") }

// IsMatrix reports whether the module's weight is a matrix operator (Linear,
// Conv1D, a convolution, an Embedding) that low-rank factorisation, RegMean
// or an adapter can act on.
func (m *Module) IsMatrix() bool {
	switch m.Kind {
	case Linear, Conv1D, Conv, Embedding:
		return m.Weight() != nil
	}
	return false
}

// IsLinear reports whether the module computes y = W x + b on feature
// vectors: a Linear or a Conv1D (whatever the storage order).
func (m *Module) IsLinear() bool { return (m.Kind == Linear || m.Kind == Conv1D) && m.Weight() != nil }

// IsNorm reports whether the module is a normalisation layer.
func (m *Module) IsNorm() bool {
	switch m.Kind {
	case RMSNorm, GemmaRMSNorm, LayerNorm, BatchNorm:
		return true
	}
	return false
}

// Attention is a model's attention geometry.
type Attention struct {
	Heads   int `json:"heads"`
	KVHeads int `json:"kv_heads"`
	HeadDim int `json:"head_dim"`
	// Rotary is true under rotary position embeddings; RotaryDim is the
	// number of dimensions of each head they rotate (HeadDim unless partial).
	Rotary    bool    `json:"rotary"`
	RotaryDim int     `json:"rotary_dim,omitempty"`
	RopeTheta float64 `json:"rope_theta,omitempty"`
}

// Tie records that module Module uses the weight of module To.
type Tie struct {
	Module string // "lm_head"
	To     string // "model.embed_tokens"
	// Stored is true when the checkpoint holds its own copy of the tied
	// weight (frameworks load To's weight for both and ignore the copy).
	Stored bool
}

// Arch describes a checkpoint.
type Arch struct {
	// Family is the recognised family ("llama", "gpt2", ...) or "generic".
	Family string
	// ModelType and Architecture are config.json's model_type and first
	// architectures entry ("" without a config).
	ModelType, Architecture string
	// Config is the parsed config.json (nil without one).
	Config *Config `json:"-"`
	// Layers is the number of blocks (transformer layers, CNN blocks).
	Layers int
	// Hidden is the width of the residual stream (0 if none).
	Hidden int
	// Attention is the attention geometry (nil without attention, or when
	// it cannot be known: no config.json).
	Attention *Attention `json:",omitempty"`
	// Experts and ExpertsPerToken describe a mixture of experts.
	Experts         int `json:",omitempty"`
	ExpertsPerToken int `json:",omitempty"`
	// Block is the CNN block type ("basic" or "bottleneck" for ResNet).
	Block   string `json:",omitempty"`
	Modules []*Module
	Spaces  []*Space
	Ties    []Tie `json:",omitempty"`
	// Prefix is the base model's attribute in the model class
	// (base_model_prefix: "model", "transformer", "bert", "vit"), which PEFT
	// module paths include.
	Prefix string `json:",omitempty"`
	// Notes say what was recognised and what was assumed, in order.
	Notes []string

	family    Family
	byTensor  map[string]*Param
	byModule  map[string]*Module
	bySpace   map[string]*Space
	baseClass bool // Architecture is the family's base model class (no head)
}

// Module returns the named module.
func (a *Arch) Module(name string) (*Module, bool) { m, ok := a.byModule[name]; return m, ok }

// Param returns the parameter a tensor is.
func (a *Arch) Param(tensor string) (*Param, bool) { p, ok := a.byTensor[tensor]; return p, ok }

// Space returns the named activation space.
func (a *Arch) Space(name string) (*Space, bool) { s, ok := a.bySpace[name]; return s, ok }

// ModuleOf returns the module a tensor belongs to.
func (a *Arch) ModuleOf(tensor string) (*Module, bool) {
	p, ok := a.byTensor[tensor]
	if !ok {
		return nil, false
	}
	return p.Module, true
}

// LayerModules returns the modules of block i, sorted by name.
func (a *Arch) LayerModules(i int) []*Module {
	var out []*Module
	for _, m := range a.Modules {
		if m.Layer == i {
			out = append(out, m)
		}
	}
	return out
}

// Readers returns the modules that read the space, and Writers those that
// write it (a norm does both), sorted by name.
func (a *Arch) Readers(space string) []*Module {
	var out []*Module
	for _, m := range a.Modules {
		if m.In == space || a.inFused(m.In, space) {
			out = append(out, m)
		}
	}
	return out
}

// Writers returns the modules whose output is the space (or contains it, for
// a fused output), sorted by name.
func (a *Arch) Writers(space string) []*Module {
	var out []*Module
	for _, m := range a.Modules {
		if m.Out == space || a.inFused(m.Out, space) {
			out = append(out, m)
		}
	}
	return out
}

func (a *Arch) inFused(name, part string) bool {
	s, ok := a.bySpace[name]
	return ok && slices.Contains(s.Parts, part)
}

// Config is a parsed config.json: the fields every family uses, and typed
// access to the others.
type Config struct {
	ModelType     string
	Architectures []string
	Raw           map[string]any
}

// ParseConfig parses the bytes of a config.json.
func ParseConfig(b []byte) (*Config, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	c := &Config{Raw: raw}
	c.ModelType = c.String("model_type")
	if as, ok := raw["architectures"].([]any); ok {
		for _, x := range as {
			if s, ok := x.(string); ok {
				c.Architectures = append(c.Architectures, s)
			}
		}
	}
	return c, nil
}

// Architecture returns the first architectures entry, or "".
func (c *Config) Architecture() string {
	if c == nil || len(c.Architectures) == 0 {
		return ""
	}
	return c.Architectures[0]
}

// Has reports whether the key is present and not null.
func (c *Config) Has(key string) bool {
	if c == nil {
		return false
	}
	v, ok := c.Raw[key]
	return ok && v != nil
}

// Int returns an integer field, or def when absent or not a number.
func (c *Config) Int(key string, def int) int {
	if c == nil {
		return def
	}
	if v, ok := c.Raw[key].(float64); ok {
		return int(v)
	}
	return def
}

// Float returns a number field, or def.
func (c *Config) Float(key string, def float64) float64 {
	if c == nil {
		return def
	}
	if v, ok := c.Raw[key].(float64); ok {
		return v
	}
	return def
}

// Bool returns a boolean field, or def.
func (c *Config) Bool(key string, def bool) bool {
	if c == nil {
		return def
	}
	if v, ok := c.Raw[key].(bool); ok {
		return v
	}
	return def
}

// String returns a string field, or "".
func (c *Config) String(key string) string {
	if c == nil {
		return ""
	}
	s, _ := c.Raw[key].(string)
	return s
}

// Family describes one model family. A family is one file: a type
// implementing Family, registered with Register in an init function.
type Family interface {
	// Name is the family's name ("llama").
	Name() string
	// MatchConfig reports whether config.json names this family
	// (model_type, or an architectures class).
	MatchConfig(c *Config) bool
	// MatchNames reports whether the tensor names (sorted) have this
	// family's layout, for checkpoints without a config.json (or with a
	// model_type no family knows). Families sharing a layout leave it to
	// one of them.
	MatchNames(names []string) bool
	// Describe lays out the checkpoint: every module, space, tie and the
	// geometry, through the builder. Tensors it leaves out are described
	// generically, with a note.
	Describe(b *Builder) error
}

var registry = map[string]Family{}

// Register adds a family. It panics on a duplicate name (a programming
// error, found at init).
func Register(f Family) {
	if _, dup := registry[f.Name()]; dup {
		panic("arch: family " + f.Name() + " registered twice")
	}
	registry[f.Name()] = f
}

// Families returns the registered family names, sorted.
func Families() []string { return slices.Sorted(maps.Keys(registry)) }

// Open describes an opened checkpoint, reading config.json from its
// directory when it has one.
func Open(m *checkpoint.Model) (*Arch, error) {
	var cfg *Config
	if m.Dir != "" {
		p := filepath.Join(m.Dir, "config.json")
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			if cfg, err = ParseConfig(b); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	}
	shapes := map[string][]int64{}
	for _, n := range m.Names() {
		info, _ := m.Info(n)
		shapes[n] = info.Shape
	}
	a, err := Describe(cfg, shapes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return a, nil
}

// Describe describes a checkpoint from its config (nil if none) and the
// shapes of all its tensors.
func Describe(cfg *Config, shapes map[string][]int64) (*Arch, error) {
	names := slices.Sorted(maps.Keys(shapes))
	fam, notes := detect(cfg, names)
	b := newBuilder(cfg, shapes, names)
	b.arch.Notes = append(b.arch.Notes, notes...)
	if fam != nil {
		b.arch.Family = fam.Name()
		b.arch.family = fam
		if err := fam.Describe(b); err != nil {
			return nil, fmt.Errorf("%s layout: %w", fam.Name(), err)
		}
		if b.err != nil {
			return nil, fmt.Errorf("%s layout: %w", fam.Name(), b.err)
		}
	} else {
		b.arch.Family = "generic"
	}
	b.describeRest(fam != nil)
	if b.err != nil {
		return nil, b.err
	}
	return b.finish()
}

// detect picks the family: by config.json, else by tensor names.
func detect(cfg *Config, names []string) (Family, []string) {
	var notes []string
	if cfg != nil {
		var hits []Family
		for _, n := range Families() {
			if registry[n].MatchConfig(cfg) {
				hits = append(hits, registry[n])
			}
		}
		if len(hits) == 1 {
			return hits[0], []string{fmt.Sprintf("family %s (config.json model_type %q, architectures %v)", hits[0].Name(), cfg.ModelType, cfg.Architectures)}
		}
		if len(hits) > 1 {
			var hn []string
			for _, h := range hits {
				hn = append(hn, h.Name())
			}
			notes = append(notes, fmt.Sprintf("config.json fits several families (%s); recognising from tensor names", strings.Join(hn, ", ")))
		} else {
			notes = append(notes, fmt.Sprintf("config.json model_type %q (architectures %v) is not a known family", cfg.ModelType, cfg.Architectures))
		}
	} else {
		notes = append(notes, "no config.json")
	}
	var hits []Family
	for _, n := range Families() {
		if registry[n].MatchNames(names) {
			hits = append(hits, registry[n])
		}
	}
	if len(hits) == 1 {
		return hits[0], append(notes, fmt.Sprintf("family %s recognised from the tensor names", hits[0].Name()))
	}
	if len(hits) > 1 {
		var hn []string
		for _, h := range hits {
			hn = append(hn, h.Name())
		}
		notes = append(notes, fmt.Sprintf("the tensor names fit several families (%s)", strings.Join(hn, ", ")))
	}
	return nil, append(notes, "no family recognised: generic description (2-D weights assumed nn.Linear [out, in], "+
		"weights of rank 3 or more convolutions [out, in, k...], embeddings and heads recognised by name only; "+
		"a Conv1D [in, out] weight cannot be told from a Linear one without its family)")
}

// sortModules orders modules by name.
func sortModules(ms []*Module) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
}
