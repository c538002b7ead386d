package arch

import "slices"

// mixtral is Mistral AI's Mixtral: the Llama attention with a sparse mixture
// of experts per layer (block_sparse_moe: a router gate [experts, hidden] and
// per expert w1 = gate, w3 = up, w2 = down), top-k routing.
type mixtral struct{}

func init() { Register(mixtral{}) }

func (mixtral) Name() string { return "mixtral" }

func (mixtral) MatchConfig(c *Config) bool {
	return c.ModelType == "mixtral" || slices.Contains([]string{"MixtralForCausalLM", "MixtralModel"}, c.Architecture())
}

func (mixtral) MatchNames(names []string) bool {
	_, ok := decoderRoot(names, "block_sparse_moe.gate.weight")
	return ok
}

func (mixtral) BaseClasses() []string { return []string{"MixtralModel"} }

func (mixtral) Describe(b *Builder) error { return decoder{norm: RMSNorm, moe: true}.describe(b) }
