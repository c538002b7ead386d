package arch

import "slices"

// llama is Meta's Llama (1, 2, 3): RMSNorm, rotary attention with grouped
// query heads, SwiGLU MLP. It also claims the shared decoder layout when a
// checkpoint has no config.json (Mistral, Qwen2 and Gemma checkpoints look
// the same by their tensor names).
type llama struct{}

func init() { Register(llama{}) }

func (llama) Name() string { return "llama" }

func (llama) MatchConfig(c *Config) bool {
	return c.ModelType == "llama" || slices.Contains([]string{"LlamaForCausalLM", "LlamaModel", "LlamaForSequenceClassification"}, c.Architecture())
}

func (llama) MatchNames(names []string) bool {
	_, ok := decoderRoot(names, "self_attn.q_proj.weight")
	_, gate := decoderRoot(names, "mlp.gate_proj.weight")
	return ok && gate
}

func (llama) BaseClasses() []string { return []string{"LlamaModel"} }

func (llama) Describe(b *Builder) error {
	if b.Config == nil {
		b.Note("the llama layout is shared by Mistral, Qwen2 and Gemma; without config.json, norms are taken as plain RMSNorm (Gemma's are 1 + w)")
	}
	return decoder{norm: RMSNorm}.describe(b)
}
