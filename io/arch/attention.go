package arch

import (
	"cmp"
	"slices"
)

// AttentionSpaces are the activation spaces of one attention module: what
// its query, key and value projections write (Q, K, V: the parts of a fused
// q|k|v projection's output for Phi-3 and GPT-2) and what its output
// projection reads (Out). Query head h attends with key/value head
// h / (Q.Heads / K.Heads) (grouped-query attention), and its output is
// features [h*HeadDim, (h+1)*HeadDim) of Out.
type AttentionSpaces struct {
	Layer        int
	Q, K, V, Out string
}

// Attentions returns the spaces of every attention module, in layer order,
// found from the roles of each layer's modules (the q, k and v projections
// or a fused qkv projection, and the output projection). A layer whose
// attention is incomplete in the checkpoint is left out.
func (a *Arch) Attentions() []AttentionSpaces {
	byLayer := map[int]*AttentionSpaces{}
	get := func(l int) *AttentionSpaces {
		if byLayer[l] == nil {
			byLayer[l] = &AttentionSpaces{Layer: l}
		}
		return byLayer[l]
	}
	for _, m := range a.Modules {
		switch m.Role {
		case RoleAttnQ:
			get(m.Layer).Q = m.Out
		case RoleAttnK:
			get(m.Layer).K = m.Out
		case RoleAttnV:
			get(m.Layer).V = m.Out
		case RoleAttnQKV:
			if s, ok := a.bySpace[m.Out]; ok && len(s.Parts) == 3 {
				at := get(m.Layer)
				at.Q, at.K, at.V = s.Parts[0], s.Parts[1], s.Parts[2]
			}
		case RoleAttnOut:
			get(m.Layer).Out = m.In
		}
	}
	var out []AttentionSpaces
	for _, at := range byLayer {
		if at.Q != "" && at.K != "" && at.V != "" && at.Out != "" {
			out = append(out, *at)
		}
	}
	slices.SortFunc(out, func(x, y AttentionSpaces) int { return cmp.Compare(x.Layer, y.Layer) })
	return out
}
