package arch

import "slices"

// qwen2 is Alibaba's Qwen2 / Qwen2.5: the Llama layout with biases on q, k
// and v, and tied embeddings in the small models.
type qwen2 struct{}

func init() { Register(qwen2{}) }

func (qwen2) Name() string { return "qwen2" }

func (qwen2) MatchConfig(c *Config) bool {
	return c.ModelType == "qwen2" || slices.Contains([]string{"Qwen2ForCausalLM", "Qwen2Model"}, c.Architecture())
}

// MatchNames leaves the shared layout to llama.
func (qwen2) MatchNames([]string) bool { return false }

func (qwen2) BaseClasses() []string { return []string{"Qwen2Model"} }

func (qwen2) Describe(b *Builder) error { return decoder{norm: RMSNorm}.describe(b) }
