package arch

import "slices"

// mistral is Mistral AI's dense decoder: the Llama layout (sliding-window
// attention does not change the weights).
type mistral struct{}

func init() { Register(mistral{}) }

func (mistral) Name() string { return "mistral" }

func (mistral) MatchConfig(c *Config) bool {
	return c.ModelType == "mistral" || slices.Contains([]string{"MistralForCausalLM", "MistralModel"}, c.Architecture())
}

// MatchNames leaves the shared layout to llama.
func (mistral) MatchNames([]string) bool { return false }

func (mistral) BaseClasses() []string { return []string{"MistralModel"} }

func (mistral) Describe(b *Builder) error { return decoder{norm: RMSNorm}.describe(b) }
