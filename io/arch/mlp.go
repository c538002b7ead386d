package arch

import (
	"fmt"
	"strings"
)

// mlp is wtool's plain MLP (the demo models, fisher/mlp's engine): a chain
// of Linear layers named in config.json's "layers" (model_type "mlp"), the
// last one the output head. Each hidden layer's outputs are a space named
// after the layer.
type mlp struct{}

func init() { Register(mlp{}) }

func (mlp) Name() string { return "mlp" }

func (mlp) MatchConfig(c *Config) bool { return c.ModelType == "mlp" }

// MatchNames: any chain of Linear layers looks like this; without
// config.json the generic description applies.
func (mlp) MatchNames([]string) bool { return false }

func (mlp) Describe(b *Builder) error {
	var layers []string
	if l, ok := b.Config.Raw["layers"].([]any); ok {
		for _, x := range l {
			if s, ok := x.(string); ok {
				layers = append(layers, s)
			}
		}
	}
	if len(layers) == 0 {
		return fmt.Errorf("config.json has no \"layers\" list of the MLP's Linear modules")
	}
	b.Space("input", SpaceInput)
	b.Space("output", SpaceOutput)
	in := "input"
	for i, l := range layers {
		if strings.Contains(l, ",") {
			return fmt.Errorf("layer name %q", l)
		}
		out, role := l, RoleLayer
		if i == len(layers)-1 {
			out, role = "output", RoleHead
		} else {
			b.Space(out, SpaceHidden)
		}
		b.SetLayer(i)
		b.Add(Spec{Name: l, Kind: Linear, Role: role, In: in, Out: out})
		in = out
	}
	b.SetLayer(-1)
	return nil
}
