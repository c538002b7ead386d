package permute

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// MLPSpec returns the spec of a chain of Linear layers (found as the MLP
// engine finds it, or in the given order): one group per hidden layer, named
// after the module whose outputs it permutes; it acts on that layer's weight
// rows and bias and on the next layer's weight columns.
func MLPSpec(shapes map[string][]int64, order []string) (*Spec, error) {
	chain, err := mlp.Chain(shapes, order)
	if err != nil {
		return nil, err
	}
	s := &Spec{Groups: map[string]int{}, Tensors: map[string][]Axis{}}
	for i, m := range chain {
		var rows, cols Axis
		if i+1 < len(chain) {
			rows = Axis{Group: m}
			s.Groups[m] = int(shapes[m+".weight"][0])
		}
		if i > 0 {
			cols = Axis{Group: chain[i-1]}
		}
		s.Tensors[m+".weight"] = []Axis{rows, cols}
		if _, ok := shapes[m+".bias"]; ok {
			s.Tensors[m+".bias"] = []Axis{rows}
		}
	}
	for t, axes := range s.Tensors {
		if axes[0].Group == "" && (len(axes) < 2 || axes[1].Group == "") {
			s.Tensors[t] = nil
		}
	}
	return s, nil
}

// llamaFamilies are the families of the Llama decoder layout, which the
// spec name "llama" accepts.
var llamaFamilies = []string{"gemma", "llama", "mistral", "mixtral", "phi3", "qwen2"}

// BuiltinSpec returns the spec named "auto", "mlp" or "llama" for a model,
// or reads a JSON spec file (a name ending in .json). "auto" builds the spec
// from the architecture layer ([BuildSpec]) for every family io/arch knows
// — ResNet, ViT, BERT, GPT-2, the Llama family, Phi-3, Mixtral, wtool's
// MLPs — and takes a checkpoint no family claims as a chain of Linear
// layers ([MLPSpec]) when it is one; otherwise it fails, saying to write a
// spec file. "llama" is "auto" restricted to the Llama decoder layout
// (Llama, Mistral, Qwen2, Gemma, Phi-3, Mixtral). "mlp" is [MLPSpec] with
// layers as the layer order (nil: found from the names and shapes); a
// layer order also makes "auto" take the MLP spec.
func BuiltinSpec(name string, m *checkpoint.Model, layers []string) (*Spec, error) {
	shapes := Shapes(m)
	switch name {
	case "mlp":
		return MLPSpec(shapes, layers)
	case "auto", "", "llama":
		a, err := arch.Open(m)
		if err != nil {
			return nil, err
		}
		if name == "llama" && !slices.Contains(llamaFamilies, a.Family) {
			return nil, fmt.Errorf("%s: a %s checkpoint, not one of the Llama decoder layout (%s); use --spec auto", m.Path, a.Family, strings.Join(llamaFamilies, ", "))
		}
		if name != "llama" && (a.Family == "generic" || (a.Family == "mlp" && layers != nil)) {
			s, errMLP := MLPSpec(shapes, layers)
			if errMLP == nil {
				return s, nil
			}
			if a.Family == "generic" {
				return nil, fmt.Errorf("%s: no built-in permutation spec fits: no model family recognised, and not a chain of Linear layers (%v); write a spec file (docs/permutation-spec.md) and pass --spec FILE.json", m.Path, errMLP)
			}
		}
		as, err := BuildSpec(a)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Path, err)
		}
		return as.Spec, nil
	}
	if strings.HasSuffix(name, ".json") {
		return ReadSpec(name)
	}
	return nil, fmt.Errorf("unknown spec %q (want auto, mlp, llama or a .json file)", name)
}
