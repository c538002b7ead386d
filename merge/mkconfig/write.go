package mkconfig

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
)

// ConfigFile returns the mergekit_config.yml mergekit writes beside a merged
// model: the configuration's own text when it was read from a
// single-document file, else its canonical YAML (mergekit-multi stages and
// configurations built in code).
func (c *Config) ConfigFile() []byte {
	if c.Source != nil {
		return bytes.Clone(c.Source)
	}
	return c.YAML()
}

// YAML writes the configuration in mergekit's canonical form (what its
// MergeConfiguration.to_yaml writes): keys sorted (but modules and tokens
// in their order, which has a meaning: mergekit's sorting them reorders the
// tokens it adds), defaults and empty fields left out, model references as "path@rev+lora" strings, lists of
// numbers in flow style, numbers as Python writes floats. Parameters keep
// their YAML type (mergekit would write true as 1.0). Parse(c.YAML()) gives
// back c, apart from lines and Source.
func (c *Config) YAML() []byte {
	root := &ynode{kind: ymap}
	if c.Name != "" {
		root.set("name", yscalar(c.Name))
	}
	root.set("merge_method", yscalar(c.MergeMethod))
	if c.BaseModel != nil {
		root.set("base_model", refNode(*c.BaseModel))
	}
	if len(c.Models) > 0 {
		root.set("models", modelsNode(c.Models))
	}
	if len(c.Slices) > 0 {
		root.set("slices", slicesNode(c.Slices))
	}
	if len(c.Modules) > 0 {
		mods := &ynode{kind: ymap, ordered: true}
		for _, m := range c.Modules {
			n := &ynode{kind: ymap}
			if len(m.Models) > 0 {
				n.set("models", modelsNode(m.Models))
			}
			if len(m.Slices) > 0 {
				n.set("slices", slicesNode(m.Slices))
			}
			if len(m.Parameters) > 0 {
				n.set("parameters", paramsNode(m.Parameters))
			}
			mods.set(m.Name, n)
		}
		root.set("modules", mods)
	}
	if c.DType != "" {
		root.set("dtype", yscalar(c.DType))
	}
	if c.OutDType != "" {
		root.set("out_dtype", yscalar(c.OutDType))
	}
	if len(c.Parameters) > 0 {
		root.set("parameters", paramsNode(c.Parameters))
	}
	if c.TokenizerSource != nil {
		root.set("tokenizer_source", tokSourceNode(*c.TokenizerSource))
	}
	if t := c.Tokenizer; t != nil {
		n := &ynode{kind: ymap}
		if t.Source.Kind != "union" {
			n.set("source", tokSourceNode(t.Source))
		}
		if len(t.Tokens) > 0 {
			toks := &ynode{kind: ymap, ordered: true}
			for _, tc := range t.Tokens {
				e := &ynode{kind: ymap}
				if tc.Source != nil {
					e.set("source", tokenSourceNode(*tc.Source))
				}
				if tc.Force {
					e.set("force", &ynode{kind: yscalarKind, text: "true"})
				}
				toks.set(tc.Token, e)
			}
			n.set("tokens", toks)
		}
		if t.PadToMultipleOf > 0 {
			n.set("pad_to_multiple_of", &ynode{kind: yscalarKind, text: strconv.Itoa(t.PadToMultipleOf)})
		}
		root.set("tokenizer", n)
	}
	if c.HasChatTemplate {
		root.set("chat_template", yscalar(c.ChatTemplate))
	}
	for _, f := range c.Extra {
		root.set(f.Key, fieldNode(f))
	}
	var b bytes.Buffer
	root.emit(&b, 0, false)
	return b.Bytes()
}

func modelsNode(ms []InputModel) *ynode {
	seq := &ynode{kind: yseq}
	for _, m := range ms {
		n := &ynode{kind: ymap}
		n.set("model", refNode(m.Model))
		if len(m.Parameters) > 0 {
			n.set("parameters", paramsNode(m.Parameters))
		}
		for _, f := range m.Extra {
			n.set(f.Key, fieldNode(f))
		}
		seq.items = append(seq.items, n)
	}
	return seq
}

func slicesNode(ss []OutputSlice) *ynode {
	seq := &ynode{kind: yseq}
	for _, s := range ss {
		n := &ynode{kind: ymap}
		srcs := &ynode{kind: yseq}
		for _, src := range s.Sources {
			e := &ynode{kind: ymap}
			e.set("model", refNode(src.Model))
			e.set("layer_range", &ynode{kind: yflow, text: "[" + strconv.Itoa(src.LayerRange[0]) + ", " + strconv.Itoa(src.LayerRange[1]) + "]"})
			if len(src.Parameters) > 0 {
				e.set("parameters", paramsNode(src.Parameters))
			}
			srcs.items = append(srcs.items, e)
		}
		n.set("sources", srcs)
		if s.BaseModel != nil {
			n.set("base_model", refNode(*s.BaseModel))
		}
		if s.ResidualWeight != nil {
			n.set("residual_weight", &ynode{kind: yscalarKind, text: formatFloat(*s.ResidualWeight, false)})
		}
		if len(s.Parameters) > 0 {
			n.set("parameters", paramsNode(s.Parameters))
		}
		seq.items = append(seq.items, n)
	}
	return seq
}

func paramsNode(ps Params) *ynode {
	n := &ynode{kind: ymap}
	for _, p := range ps {
		n.set(p.Name, settingNode(p.Setting))
	}
	return n
}

func gradientNode(g []float64) *ynode {
	parts := make([]string, len(g))
	for i, x := range g {
		parts[i] = formatFloat(x, false)
	}
	return &ynode{kind: yflow, text: "[" + strings.Join(parts, ", ") + "]"}
}

func settingNode(s Setting) *ynode {
	switch {
	case s.Scalar != nil:
		return valueNode(*s.Scalar)
	case s.Gradient != nil:
		return gradientNode(s.Gradient)
	}
	seq := &ynode{kind: yseq}
	for _, c := range s.Conds {
		n := &ynode{kind: ymap}
		if c.Filter != "" {
			n.set("filter", yscalar(c.Filter))
		}
		if c.Scalar != nil {
			n.set("value", valueNode(*c.Scalar))
		} else {
			n.set("value", gradientNode(c.Gradient))
		}
		seq.items = append(seq.items, n)
	}
	return seq
}

func valueNode(v Value) *ynode {
	switch v.Kind {
	case Number:
		return &ynode{kind: yscalarKind, text: formatFloat(v.Num, v.Int)}
	case Bool:
		return &ynode{kind: yscalarKind, text: strconv.FormatBool(v.Bool)}
	case String:
		return yscalar(v.Str)
	}
	return &ynode{kind: yscalarKind, text: "null"}
}

func refNode(r ModelRef) *ynode {
	s := r.String()
	if r.OverrideArchitecture == "" && !strings.ContainsAny(s, "\" ") {
		return yscalar(s)
	}
	n := &ynode{kind: ymap}
	mp := func(p ModelPath) *ynode {
		m := &ynode{kind: ymap}
		m.set("path", yscalar(p.Path))
		if p.Revision != "" {
			m.set("revision", yscalar(p.Revision))
		}
		return m
	}
	n.set("model", mp(r.Model))
	if r.LoRA != nil {
		n.set("lora", mp(*r.LoRA))
	}
	if r.OverrideArchitecture != "" {
		n.set("override_architecture", yscalar(r.OverrideArchitecture))
	}
	return n
}

func tokSourceNode(s TokenizerSource) *ynode {
	if s.Kind == "model" && s.Model != nil {
		return refNode(*s.Model)
	}
	return yscalar(s.Kind)
}

func tokenSourceNode(s TokenSource) *ynode {
	switch s.Kind {
	case "model":
		return refNode(*s.Model)
	case "zero":
		n := &ynode{kind: ymap}
		n.set("kind", yscalar("zero"))
		return n
	}
	n := &ynode{kind: ymap}
	n.set("kind", yscalar("model_token"))
	n.set("model", refNode(*s.Model))
	if s.HasToken {
		n.set("token", yscalar(s.Token))
	} else {
		n.set("token_id", &ynode{kind: yscalarKind, text: strconv.Itoa(s.TokenID)})
	}
	return n
}

// --- a small emitter in PyYAML's default block style

type ykind int

const (
	ymap ykind = iota
	yseq
	yscalarKind
	yflow
)

type ynode struct {
	kind ykind
	// keep keys in insertion order (where order has meaning: tokens are
	// added to the vocabulary in this order, modules are merged in it)
	ordered bool
	keys    []string
	vals    []*ynode
	items   []*ynode
	text    string
}

func (n *ynode) set(k string, v *ynode) {
	for i, x := range n.keys {
		if x == k {
			n.vals[i] = v
			return
		}
	}
	n.keys = append(n.keys, k)
	n.vals = append(n.vals, v)
}

func yscalar(s string) *ynode { return &ynode{kind: yscalarKind, text: quote(s)} }

func (n *ynode) inline() bool {
	return n.kind == yscalarKind || n.kind == yflow || (n.kind == ymap && len(n.keys) == 0) || (n.kind == yseq && len(n.items) == 0)
}

func (n *ynode) inlineText() string {
	switch {
	case n.kind == ymap:
		return "{}"
	case n.kind == yseq:
		return "[]"
	}
	return n.text
}

// emit writes n at indentation ind; inSeq means the first line continues a
// "- " already written.
func (n *ynode) emit(b *bytes.Buffer, ind int, inSeq bool) {
	pad := strings.Repeat(" ", ind)
	switch n.kind {
	case ymap:
		idx := make([]int, len(n.keys))
		for i := range idx {
			idx[i] = i
		}
		if !n.ordered {
			sort.SliceStable(idx, func(a, c int) bool { return n.keys[idx[a]] < n.keys[idx[c]] })
		}
		for j, i := range idx {
			if !(inSeq && j == 0) {
				b.WriteString(pad)
			}
			b.WriteString(quote(n.keys[i]))
			b.WriteString(":")
			v := n.vals[i]
			switch {
			case v.inline():
				b.WriteString(" ")
				b.WriteString(v.inlineText())
				b.WriteString("\n")
			case v.kind == yseq:
				b.WriteString("\n")
				v.emit(b, ind, false)
			default:
				b.WriteString("\n")
				v.emit(b, ind+2, false)
			}
		}
	case yseq:
		for _, it := range n.items {
			b.WriteString(pad)
			b.WriteString("- ")
			if it.inline() {
				b.WriteString(it.inlineText())
				b.WriteString("\n")
				continue
			}
			it.emit(b, ind+2, true)
		}
	default:
		b.WriteString(pad)
		b.WriteString(n.inlineText())
		b.WriteString("\n")
	}
}

// quote writes s as a YAML scalar that both PyYAML (YAML 1.1) and YAML 1.2
// read back as the string s: plain when that is unambiguous, else quoted.
func quote(s string) string {
	if plainOK(s) {
		return s
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return strconv.Quote(s)
		}
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func plainOK(s string) bool {
	if s == "" || strings.TrimSpace(s) != s {
		return false
	}
	if strings.ContainsAny(s[:1], "-?:,[]{}#&*!|>'\"%@`<=~") {
		return false
	}
	if strings.Contains(s, ": ") || strings.Contains(s, " #") || strings.HasSuffix(s, ":") {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return false
		}
	}
	// would be read as another type (YAML 1.1 or 1.2), or as a date
	if bool11.MatchString(s) || int11.MatchString(s) || float11.MatchString(s) || null11.MatchString(s) {
		return false
	}
	if _, ok := parseLaxFloat(s); ok {
		return false
	}
	if len(s) >= 8 && s[0] >= '0' && s[0] <= '9' && strings.Count(s[:min(len(s), 10)], "-") == 2 {
		return false
	}
	return true
}

// fieldNode writes an extension key's value: a scalar, or a list of
// scalars as one item per line.
func fieldNode(f Field) *ynode {
	if f.List == nil {
		return valueNode(f.Value)
	}
	seq := &ynode{kind: yseq}
	for _, v := range f.List {
		seq.items = append(seq.items, valueNode(v))
	}
	return seq
}
