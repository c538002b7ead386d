package arch

import "slices"

// gemma is Google's Gemma (first generation): the Llama layout with norms
// that scale by (1 + w), embeddings multiplied by sqrt(hidden), a GELU-gated
// MLP, head_dim given in config.json and tied embeddings by default.
type gemma struct{}

func init() { Register(gemma{}) }

func (gemma) Name() string { return "gemma" }

func (gemma) MatchConfig(c *Config) bool {
	return c.ModelType == "gemma" || slices.Contains([]string{"GemmaForCausalLM", "GemmaModel"}, c.Architecture())
}

// MatchNames leaves the shared layout to llama: Gemma is told apart only by
// its config.json.
func (gemma) MatchNames([]string) bool { return false }

func (gemma) BaseClasses() []string { return []string{"GemmaModel"} }

func (gemma) Describe(b *Builder) error {
	return decoder{norm: GemmaRMSNorm, tieDefault: true}.describe(b)
}
