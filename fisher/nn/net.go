package nn

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// ErrUnsupported is returned (wrapped in an *UnsupportedError) for a
// checkpoint whose family the engine cannot run.
var ErrUnsupported = errors.New("the built-in engine does not run this architecture")

// UnsupportedError says which family (or which feature of it) the engine
// cannot run.
type UnsupportedError struct {
	Family string
	Reason string
}

func (e *UnsupportedError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("the built-in engine cannot run this %s checkpoint: %s", e.Family, e.Reason)
	}
	return fmt.Sprintf("the built-in engine does not run %s checkpoints (it runs %s)", e.Family, strings.Join(Families(), ", "))
}

func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// Weights gives a checkpoint's tensors by name: a *checkpoint.Model, or a
// TensorMap of tensors in memory (a merge's result before it is written).
type Weights interface {
	Tensor(name string) (*tensors.Tensor, error)
}

// TensorMap is a set of tensors in memory, by name.
type TensorMap map[string]*tensors.Tensor

// Tensor returns the named tensor.
func (m TensorMap) Tensor(name string) (*tensors.Tensor, error) {
	t, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %q: %w", name, checkpoint.ErrNotFound)
	}
	return t, nil
}

// Shapes returns every tensor's shape, for arch.Describe.
func (m TensorMap) Shapes() map[string][]int64 {
	out := make(map[string][]int64, len(m))
	for k, t := range m {
		out[k] = t.Shape
	}
	return out
}

// Net is a checkpoint loaded for the engine: its architecture (from
// io/arch) and every parameter decoded to float32. A Net is not safe for
// concurrent use by several passes (RecomputeBatchNorm changes it).
type Net struct {
	// Arch describes the checkpoint; the engine runs what it says.
	Arch *arch.Arch
	// Path is where the weights came from ("" for tensors in memory).
	Path string

	fam    family
	params map[string][]float32 // by tensor name, float32, stored layout
	dtypes map[string]tensors.DType
}

// builder makes a family's forward pass for a net.
type builder func(n *Net) (family, error)

var registry = map[string]builder{}

// register adds the forward pass of an io/arch family (one file per
// family, in an init function).
func register(name string, b builder) {
	if _, dup := registry[name]; dup {
		panic("nn: family " + name + " registered twice")
	}
	registry[name] = b
}

// Families returns the io/arch families the engine runs, sorted.
func Families() []string { return slices.Sorted(maps.Keys(registry)) }

// Supports reports whether the engine runs the architecture's family.
func Supports(a *arch.Arch) bool { _, ok := registry[a.Family]; return ok }

// Load describes an opened checkpoint with io/arch and loads it.
func Load(m *checkpoint.Model) (*Net, error) {
	a, err := arch.Open(m)
	if err != nil {
		return nil, err
	}
	n, err := New(a, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	n.Path = m.Path
	return n, nil
}

// LoadPath opens a checkpoint (a file, a sharded index or a model
// directory), loads it and closes it.
func LoadPath(path string) (*Net, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return Load(m)
}

// FromTensors describes tensors in memory with io/arch (cfg is the parsed
// config.json, nil if none) and loads them: a merge's result can be
// evaluated, or its BatchNorm statistics recomputed, before it is written.
func FromTensors(cfg *arch.Config, tm TensorMap) (*Net, error) {
	a, err := arch.Describe(cfg, tm.Shapes())
	if err != nil {
		return nil, err
	}
	return New(a, tm)
}

// New loads the parameters of a described checkpoint from w. Every
// parameter of every module (weights, biases, norm and BatchNorm tensors)
// is decoded to float32; buffers the forward pass recomputes (rotary
// frequencies, position ids, attention masks) are not read.
func New(a *arch.Arch, w Weights) (*Net, error) {
	b, ok := registry[a.Family]
	if !ok {
		return nil, &UnsupportedError{Family: a.Family}
	}
	n := &Net{Arch: a, params: map[string][]float32{}, dtypes: map[string]tensors.DType{}}
	type infoer interface {
		Info(string) (checkpoint.TensorInfo, bool)
	}
	type releaser interface{ Release(string) }
	for _, mod := range a.Modules {
		if mod.Kind == arch.Buffer || mod.Kind == arch.Unknown {
			continue
		}
		for _, p := range mod.Params {
			if p.Name == "num_batches_tracked" {
				continue
			}
			t, err := w.Tensor(p.Tensor)
			if err != nil {
				return nil, err
			}
			if !t.DType.IsFloat() {
				return nil, fmt.Errorf("tensor %q is %s, not a floating-point parameter", p.Tensor, t.DType)
			}
			file := ""
			if in, ok := w.(infoer); ok {
				if info, ok := in.Info(p.Tensor); ok {
					file = info.File
				}
			}
			var v []float32
			err = safetensors.Guard(file, p.Tensor, func() error {
				var err error
				v, err = t.Float32()
				return err
			})
			if err != nil {
				return nil, err
			}
			for i, x := range v {
				if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
					return nil, fmt.Errorf("tensor %q: non-finite value %g at %d", p.Tensor, x, i)
				}
			}
			if r, ok := w.(releaser); ok {
				r.Release(p.Tensor)
			}
			n.params[p.Tensor] = v
			n.dtypes[p.Tensor] = t.DType
		}
	}
	fam, err := b(n)
	if err != nil {
		return nil, err
	}
	n.fam = fam
	return n, nil
}

// param returns a module parameter ("weight", "bias", "running_mean"...)
// as float32, or nil when the module has none.
func (n *Net) param(module, name string) []float32 {
	m, ok := n.Arch.Module(module)
	if !ok {
		return nil
	}
	p := m.Param(name)
	if p == nil {
		return nil
	}
	return n.params[p.Tensor]
}

// mustModule returns a module that the family's layout requires.
func (n *Net) mustModule(name string) (*arch.Module, error) {
	m, ok := n.Arch.Module(name)
	if !ok || m.Weight() == nil {
		return nil, fmt.Errorf("module %q is missing", name)
	}
	return m, nil
}

// Points lists every statistic the engine records for this network, in
// forward order: module inputs and activation points (docs/stats.md).
func (n *Net) Points() []Point { return n.fam.points() }

// Input describes what the network reads.
func (n *Net) Input() Input { return n.fam.input() }

// Tensor returns a parameter's current values (float32; BatchNorm running
// statistics reflect RecomputeBatchNorm).
func (n *Net) Tensor(name string) ([]float32, bool) { v, ok := n.params[name]; return v, ok }

// sameArch checks that two nets can run side by side (joint statistics):
// the same family and the same tensors with the same shapes.
func sameArch(a, b *Net) error {
	if a.Arch.Family != b.Arch.Family {
		return fmt.Errorf("the models are of different families (%s and %s)", a.Arch.Family, b.Arch.Family)
	}
	for _, ma := range a.Arch.Modules {
		mb, ok := b.Arch.Module(ma.Name)
		if !ok {
			return fmt.Errorf("module %q is in the first model only", ma.Name)
		}
		for _, pa := range ma.Params {
			pb := mb.Param(pa.Name)
			if pb == nil || !slices.Equal(pa.Shape, pb.Shape) {
				return fmt.Errorf("tensor %q differs between the models", pa.Tensor)
			}
		}
	}
	if len(a.Arch.Modules) != len(b.Arch.Modules) {
		return fmt.Errorf("the second model has %d modules, the first %d", len(b.Arch.Modules), len(a.Arch.Modules))
	}
	for _, k := range engineKeys {
		va, vb := configValue(a.Arch.Config, k), configValue(b.Arch.Config, k)
		if va != vb {
			return fmt.Errorf("the models' config.json differ in %s (%s and %s)", k, va, vb)
		}
	}
	return nil
}

// engineKeys are the config.json keys the forward passes read.
var engineKeys = []string{"stem_stride", "stem_pool", "batch_norm_eps", "image_size", "num_channels", "patch_size",
	"layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "hidden_act", "hidden_activation", "activation_function",
	"rope_theta", "rope_scaling", "partial_rotary_factor", "sliding_window", "use_sliding_window",
	"num_attention_heads", "num_key_value_heads", "n_head", "head_dim", "num_experts_per_tok", "tie_word_embeddings"}

func configValue(c *arch.Config, k string) string {
	if c == nil || !c.Has(k) {
		return "(unset)"
	}
	return fmt.Sprint(c.Raw[k])
}
