// Package mlp is wtool's built-in engine for plain MLP checkpoints: a chain
// of Linear layers (any module names, biases optional) with one activation
// between layers. It runs batches forward (float32, blocked GEMM through
// gonum's blas32) and backward through a softmax cross-entropy loss, which is
// enough to compute calibration statistics (CollectStats), diagonal Fisher
// information (CollectFisher) and accuracy (Evaluate) without leaving Go.
// Architectures other than plain MLPs get their statistics from the PyTorch
// collector tools/wtool_collect.py, which writes the same files.
package mlp

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
)

// Activation is the nonlinearity applied between layers (not after the last).
type Activation int

// The supported activations. GELU is the exact (erf) form, PyTorch's default.
const (
	ReLU Activation = iota
	GELU
	SiLU
	Tanh
)

// ParseActivation parses relu, gelu, silu (or swish) and tanh.
func ParseActivation(s string) (Activation, error) {
	switch strings.ToLower(s) {
	case "relu", "":
		return ReLU, nil
	case "gelu":
		return GELU, nil
	case "silu", "swish":
		return SiLU, nil
	case "tanh":
		return Tanh, nil
	}
	return 0, fmt.Errorf("unknown activation %q (want relu, gelu, silu or tanh)", s)
}

func (a Activation) String() string {
	return [...]string{"relu", "gelu", "silu", "tanh"}[a]
}

// apply computes dst = act(z).
func (a Activation) apply(dst, z []float32) {
	switch a {
	case ReLU:
		for i, v := range z {
			dst[i] = max(v, 0)
		}
	case GELU:
		for i, v := range z {
			x := float64(v)
			dst[i] = float32(0.5 * x * (1 + math.Erf(x/math.Sqrt2)))
		}
	case SiLU:
		for i, v := range z {
			x := float64(v)
			dst[i] = float32(x / (1 + math.Exp(-x)))
		}
	case Tanh:
		for i, v := range z {
			dst[i] = float32(math.Tanh(float64(v)))
		}
	}
}

// backprop multiplies the gradient g (with respect to act(z)) by act'(z) in place.
func (a Activation) backprop(g, z []float32) {
	switch a {
	case ReLU:
		for i, v := range z {
			if v <= 0 {
				g[i] = 0
			}
		}
	case GELU:
		for i, v := range z {
			x := float64(v)
			cdf := 0.5 * (1 + math.Erf(x/math.Sqrt2))
			pdf := math.Exp(-x*x/2) / math.Sqrt(2*math.Pi)
			g[i] *= float32(cdf + x*pdf)
		}
	case SiLU:
		for i, v := range z {
			s := 1 / (1 + math.Exp(-float64(v)))
			g[i] *= float32(s * (1 + float64(v)*(1-s)))
		}
	case Tanh:
		for i, v := range z {
			t := math.Tanh(float64(v))
			g[i] *= float32(1 - t*t)
		}
	}
}

// Layer is one Linear layer: y = W x + b.
type Layer struct {
	Name string    // module name: the weight tensor's name without ".weight"
	Out  int       // output features
	In   int       // input features
	W    []float32 // Out x In, row-major (PyTorch layout)
	B    []float32 // Out values, or nil when the layer has no bias
}

// Network is an MLP: Layers applied in order with Act between them.
type Network struct {
	Layers []Layer
	Act    Activation
}

// Inputs returns the number of input features.
func (n *Network) Inputs() int { return n.Layers[0].In }

// Classes returns the number of outputs of the last layer.
func (n *Network) Classes() int { return n.Layers[len(n.Layers)-1].Out }

// Modules returns the layer names in forward order.
func (n *Network) Modules() []string {
	out := make([]string, len(n.Layers))
	for i, l := range n.Layers {
		out[i] = l.Name
	}
	return out
}

// Validate checks the layer shapes chain and the slices have their sizes.
func (n *Network) Validate() error {
	if len(n.Layers) == 0 {
		return fmt.Errorf("the network has no layers")
	}
	for i, l := range n.Layers {
		if l.In <= 0 || l.Out <= 0 || len(l.W) != l.In*l.Out || (l.B != nil && len(l.B) != l.Out) {
			return fmt.Errorf("layer %q: inconsistent sizes (%d x %d, %d weights, %d biases)", l.Name, l.Out, l.In, len(l.W), len(l.B))
		}
		if i > 0 && l.In != n.Layers[i-1].Out {
			return fmt.Errorf("layer %q takes %d inputs but %q gives %d outputs", l.Name, l.In, n.Layers[i-1].Name, n.Layers[i-1].Out)
		}
	}
	return nil
}

// Chain orders the Linear modules of a checkpoint, given the shapes of all
// its tensors. Every tensor must be a module's "<m>.weight" (2-D, [out, in])
// or "<m>.bias" (1-D, [out]); anything else means the checkpoint is not a
// plain MLP. With order (module names), that order is checked and used.
// Otherwise the modules in natural name order (fc2 before fc10) are used if
// their shapes chain; failing that, the one shape-consistent order if there
// is exactly one. Several possible orders are an error asking for an
// explicit order.
func Chain(shapes map[string][]int64, order []string) ([]string, error) {
	mods := map[string][2]int{}                // module -> (out, in)
	sorted := slices.Sorted(maps.Keys(shapes)) // errors name the same tensor every run
	for _, name := range sorted {
		shape := shapes[name]
		switch {
		case strings.HasSuffix(name, ".weight") && len(shape) == 2:
			mods[strings.TrimSuffix(name, ".weight")] = [2]int{int(shape[0]), int(shape[1])}
		case strings.HasSuffix(name, ".bias") && len(shape) == 1:
		default:
			return nil, fmt.Errorf("tensor %q %v is not a Linear weight or bias: not a plain MLP (a chain of Linear layers)", name, shape)
		}
	}
	for _, name := range sorted {
		shape := shapes[name]
		if m, ok := strings.CutSuffix(name, ".bias"); ok && len(shape) == 1 {
			w, ok := mods[m]
			if !ok {
				return nil, fmt.Errorf("tensor %q is a bias without a %s.weight", name, m)
			}
			if int(shape[0]) != w[0] {
				return nil, fmt.Errorf("tensor %q has %d values but %s.weight has %d rows", name, shape[0], m, w[0])
			}
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("no Linear weights (2-D tensors named <module>.weight)")
	}
	chains := func(seq []string) error {
		for i := 1; i < len(seq); i++ {
			if mods[seq[i]][1] != mods[seq[i-1]][0] {
				return fmt.Errorf("%s takes %d inputs but %s gives %d outputs", seq[i], mods[seq[i]][1], seq[i-1], mods[seq[i-1]][0])
			}
		}
		return nil
	}
	if len(order) > 0 {
		for _, m := range order {
			if _, ok := mods[m]; !ok {
				return nil, fmt.Errorf("layer %q: no tensor %s.weight in the checkpoint", m, m)
			}
		}
		if len(order) != len(mods) || hasDup(order) {
			return nil, fmt.Errorf("the layer order lists %d modules (%s) but the checkpoint has %d distinct ones", len(order), strings.Join(order, ","), len(mods))
		}
		if err := chains(order); err != nil {
			return nil, fmt.Errorf("layer order %s does not chain: %w", strings.Join(order, ","), err)
		}
		return order, nil
	}
	names := make([]string, 0, len(mods))
	for m := range mods {
		names = append(names, m)
	}
	slices.SortFunc(names, naturalCompare)
	if chains(names) == nil {
		return names, nil
	}
	// search for shape-consistent orders, stopping at the second
	var found [][]string
	used := make([]bool, len(names))
	var seq []string
	var dfs func()
	dfs = func() {
		if len(found) > 1 {
			return
		}
		if len(seq) == len(names) {
			found = append(found, slices.Clone(seq))
			return
		}
		for i, m := range names {
			if used[i] || (len(seq) > 0 && mods[m][1] != mods[seq[len(seq)-1]][0]) {
				continue
			}
			used[i] = true
			seq = append(seq, m)
			dfs()
			seq = seq[:len(seq)-1]
			used[i] = false
		}
	}
	dfs()
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("the Linear layers (%s) do not form a chain in any order", strings.Join(names, ", "))
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("the Linear layers can be chained in several orders (%s or %s); give the order with --layers", strings.Join(found[0], ","), strings.Join(found[1], ","))
}

func hasDup(s []string) bool {
	seen := map[string]bool{}
	for _, x := range s {
		if seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}

// naturalCompare orders strings with digit runs compared as numbers, so that
// "fc2" < "fc10" and "layers.2.up" < "layers.10.up".
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da > 0 && db > 0 {
			na, _ := strconv.ParseUint(a[:da], 10, 64)
			nb, _ := strconv.ParseUint(b[:db], 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			if a[0] < b[0] {
				return -1
			}
			return 1
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitPrefix(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// Load builds the network of an MLP checkpoint (see Chain for how the layer
// order is found; order may be nil). Weights of any floating dtype are
// decoded to float32.
func Load(m *checkpoint.Model, order []string, act Activation) (*Network, error) {
	shapes := map[string][]int64{}
	for _, n := range m.Names() {
		info, _ := m.Info(n)
		shapes[n] = info.Shape
	}
	seq, err := Chain(shapes, order)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	net := &Network{Act: act}
	for _, name := range seq {
		w, err := m.Tensor(name + ".weight")
		if err != nil {
			return nil, err
		}
		vals, rows, cols, err := w.Matrix()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Path, err)
		}
		l := Layer{Name: name, Out: rows, In: cols, W: vals}
		if m.Has(name + ".bias") {
			b, _ := m.Tensor(name + ".bias")
			if l.B, err = b.Float32(); err != nil {
				return nil, fmt.Errorf("%s: %w", m.Path, err)
			}
		}
		net.Layers = append(net.Layers, l)
	}
	return net, net.Validate()
}
