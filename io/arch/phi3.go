package arch

import "slices"

// phi3 is Microsoft's Phi-3: the Llama layout with fused projections,
// self_attn.qkv_proj = q|k|v and mlp.gate_up_proj = gate|up along the
// output axis.
type phi3 struct{}

func init() { Register(phi3{}) }

func (phi3) Name() string { return "phi3" }

func (phi3) MatchConfig(c *Config) bool {
	return c.ModelType == "phi3" || slices.Contains([]string{"Phi3ForCausalLM", "Phi3Model"}, c.Architecture())
}

func (phi3) MatchNames(names []string) bool {
	_, qkv := decoderRoot(names, "self_attn.qkv_proj.weight")
	_, gu := decoderRoot(names, "mlp.gate_up_proj.weight")
	return qkv && gu
}

func (phi3) BaseClasses() []string { return []string{"Phi3Model"} }

func (phi3) Describe(b *Builder) error {
	return decoder{norm: RMSNorm, fusedQKV: true, fusedGateUp: true}.describe(b)
}
