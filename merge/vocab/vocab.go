// Package vocab builds the output vocabulary of a merge of models whose
// tokenizers differ, as mergekit does for `tokenizer_source:` and the
// `tokenizer:` section: the output tokenizer (the base model's, one model's,
// or the union of all), the row plan of every model's embedding and output
// head in that vocabulary (its own row for tokens it has, a default
// embedding for the tokens it lacks or whose embedding is forced), the new
// vocab_size, and the chat template.
//
// The plan only says where rows come from; Plan.Fill builds a model's
// permuted matrix from its original rows (read lazily by the caller), one
// row range at a time, so that embeddings stream like every other tensor.
package vocab

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/wtool/wtool/io/tokenizer"
)

// Input is one model of the merge (mergekit's referenced models: every
// model the configuration reads, the base model included).
type Input struct {
	// Name identifies the model in messages (its reference as written).
	Name string
	// Tokenizer is the model's tokenizer; nil when it has none (mergekit
	// then assumes the base model's).
	Tokenizer *tokenizer.Tokenizer
	// VocabSize is config.json's vocab_size (the rows of its embedding);
	// 0 when unknown.
	VocabSize int
}

// SourceKind is where the output vocabulary comes from.
type SourceKind int

// Vocabulary sources (tokenizer_source / tokenizer.source).
const (
	// Base: the base model's tokenizer, without its tokens beyond its
	// vocab_size.
	Base SourceKind = iota
	// Union: the base model's tokenizer plus every token of the other
	// models.
	Union
	// Model: one model's tokenizer, unchanged.
	Model
)

func (k SourceKind) String() string { return [...]string{"base", "union", "model"}[k] }

// TokenOverride is one entry of the tokenizer.tokens section: where a
// token's default embedding comes from, and whether every model uses it
// (Force) instead of its own row.
type TokenOverride struct {
	Token string
	// Source is nil for mergekit's default rules (mergekit itself fails on
	// an entry without source; wtool applies the defaults, keeping Force).
	Source *EmbedSource
	Force  bool
}

// EmbedSource is an explicit embedding source.
type EmbedSource struct {
	// Kind is "model" (that model's row of the same token), "model_token"
	// (a row of that model's original embedding, by TokenID or Token) or
	// "zero".
	Kind  string
	Model int // index into Options.Models
	// TokenID is the row (>= 0), or -1 when Token names it.
	TokenID int
	Token   string
}

// Options describe the vocabulary to build.
type Options struct {
	Models []Input
	// Base indexes the base model in Models; -1 when the merge has none
	// (mergekit then takes the first referenced model).
	Base   int
	Source SourceKind
	// SourceModel indexes the model whose tokenizer is used, for Model.
	SourceModel int
	Tokens      []TokenOverride
	// PadToMultipleOf rounds the vocabulary size up (0: no padding).
	PadToMultipleOf int
}

// DefaultKind says how a default embedding row is made.
type DefaultKind int

// Default embedding kinds.
const (
	// NoDefault: no model has the token and none was configured; rows stay
	// zero (mergekit logs an error).
	NoDefault DefaultKind = iota
	// Zero: a zero row.
	Zero
	// Row: row Row of model Model's original matrix.
	Row
	// Mean: the mean of the token's rows in models Models.
	Mean
)

// Default is the embedding a model gets for a token it lacks (or for every
// model, when forced).
type Default struct {
	Kind   DefaultKind
	Model  int
	Row    int
	Models []int
	// Why says which rule chose it, for reports.
	Why string
}

// Plan is the output vocabulary and every model's row plan.
type Plan struct {
	// Tokenizer is the output tokenizer: write its Files() into the merged
	// model's directory.
	Tokenizer *tokenizer.Tokenizer
	// Tokens lists the output tokens by id.
	Tokens []string
	// VocabSize is the number of rows of the merged embeddings (len(Tokens)
	// rounded up to PadToMultipleOf): config.json's new vocab_size.
	VocabSize int
	// Perm[m][id] is model m's original row of token id, -1 when model m
	// does not have it.
	Perm [][]int
	// Defaults[id] is the embedding a model lacking token id gets.
	Defaults []Default
	// Forced[id]: every model takes Defaults[id], even those that have the
	// token.
	Forced []bool
	// Notes are warnings for the user, in a deterministic order.
	Notes []string

	models []Input
}

// Build builds the output vocabulary and the row plans, following
// mergekit's build_tokenizer and PermutedEmbeddings (see docs/mergekit.md,
// "Tokenizers"). Differences, all deterministic where mergekit's are not:
// models are taken in the order given (mergekit uses a set); union adds
// each model's new tokens in the order of their ids in that model (mergekit
// in hash order); a token a model has beyond its vocab_size counts as
// missing (mergekit fails on it).
func Build(o Options) (*Plan, error) {
	if len(o.Models) == 0 {
		return nil, errors.New("no models")
	}
	base := o.Base
	if base < 0 {
		base = 0
	}
	if base >= len(o.Models) || o.Models[base].Tokenizer == nil {
		return nil, fmt.Errorf("base model %s has no tokenizer.json", name(o, base))
	}
	p := &Plan{models: o.Models}
	// the base tokenizer, without the tokens beyond its vocab_size
	baseTok := o.Models[base].Tokenizer.Clone()
	if vs := o.Models[base].VocabSize; vs > 0 {
		n, err := baseTok.Strip(vs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name(o, base), err)
		}
		if n > 0 {
			p.note("%s: %d tokenizer entries at ids >= vocab_size %d left out", name(o, base), n, vs)
		}
	}
	toks := make([]*tokenizer.Tokenizer, len(o.Models))
	for i, m := range o.Models {
		switch {
		case i == base:
			toks[i] = baseTok
		case m.Tokenizer != nil:
			toks[i] = m.Tokenizer
		default:
			toks[i] = baseTok
			p.note("%s has no tokenizer: its vocabulary is taken to be %s's", name(o, i), name(o, base))
		}
	}
	var out *tokenizer.Tokenizer
	switch o.Source {
	case Base:
		out = baseTok.Clone()
	case Model:
		if o.SourceModel < 0 || o.SourceModel >= len(o.Models) || o.Models[o.SourceModel].Tokenizer == nil {
			return nil, fmt.Errorf("tokenizer source %s has no tokenizer.json", name(o, o.SourceModel))
		}
		out = o.Models[o.SourceModel].Tokenizer.Clone()
	case Union:
		out = p.union(o, base, toks)
	default:
		return nil, fmt.Errorf("unknown tokenizer source %v", o.Source)
	}
	// tokens configured under tokenizer.tokens join the vocabulary; one it
	// has already keeps its id and flags (mergekit re-adds it with
	// add_tokens' default flags, which can turn a special token into a
	// plain one)
	for _, t := range o.Tokens {
		if _, ok := out.ID(t.Token); !ok {
			out.AddTokens(tokenizer.NewAddedToken(t.Token))
		}
	}
	p.Tokenizer = out

	vocab := out.Vocab()
	p.Tokens = make([]string, len(vocab))
	for tok, id := range vocab {
		if id >= len(vocab) {
			return nil, fmt.Errorf("the output vocabulary has %d tokens but %q has id %d: its ids have holes, which mergekit cannot lay out either", len(vocab), tok, id)
		}
		p.Tokens[id] = tok
	}
	p.VocabSize = len(vocab)
	if m := o.PadToMultipleOf; m > 0 && p.VocabSize%m != 0 {
		p.VocabSize += m - p.VocabSize%m
	}

	// every model's rows of the output tokens
	p.Perm = make([][]int, len(o.Models))
	for i := range o.Models {
		mv := toks[i].Vocab()
		vs := o.Models[i].VocabSize
		if vs <= 0 {
			vs = len(mv)
		}
		perm := make([]int, len(p.Tokens))
		beyond := 0
		for id, tok := range p.Tokens {
			r, ok := mv[tok]
			switch {
			case !ok:
				perm[id] = -1
			case r >= vs:
				perm[id] = -1
				beyond++
			default:
				perm[id] = r
			}
		}
		if beyond > 0 {
			p.note("%s: %d output tokens are at ids >= its vocab_size %d and count as missing", name(o, i), beyond, vs)
		}
		p.Perm[i] = perm
	}
	if err := p.assignDefaults(o, base, toks); err != nil {
		return nil, err
	}
	return p, nil
}

func name(o Options, i int) string {
	if i >= 0 && i < len(o.Models) && o.Models[i].Name != "" {
		return o.Models[i].Name
	}
	return fmt.Sprintf("model %d", i)
}

func (p *Plan) note(format string, a ...any) { p.Notes = append(p.Notes, fmt.Sprintf(format, a...)) }

// union adds to the base tokenizer every token of the other models: their
// vocabulary entries as plain added tokens, their added tokens with their
// flags (the first model's flags when models disagree).
func (p *Plan) union(o Options, base int, toks []*tokenizer.Tokenizer) *tokenizer.Tokenizer {
	order := []int{base}
	for i := range o.Models {
		if i != base && o.Models[i].Tokenizer != nil {
			order = append(order, i)
		}
	}
	var regular []string
	seenRegular := map[string]bool{}
	var added []tokenizer.AddedToken
	addedIdx := map[string]int{}
	warned := map[string]bool{}
	for _, i := range order {
		t := toks[i]
		vs := o.Models[i].VocabSize
		if vs <= 0 {
			vs = t.ModelVocabSize()
		}
		type entry struct {
			tok string
			id  int
		}
		var es []entry
		for tok, id := range t.Vocab() {
			es = append(es, entry{tok, id})
		}
		sort.Slice(es, func(a, b int) bool { return es[a].id < es[b].id || (es[a].id == es[b].id && es[a].tok < es[b].tok) })
		skipped := 0
		for _, e := range es {
			if e.id >= vs {
				skipped++
				continue
			}
			if !seenRegular[e.tok] {
				seenRegular[e.tok] = true
				regular = append(regular, e.tok)
			}
		}
		if skipped > 0 {
			p.note("%s: %d tokens at ids >= its vocab_size %d left out of the union", name(o, i), skipped, vs)
		}
		for _, a := range t.Added() {
			if a.ID >= vs {
				continue
			}
			if j, ok := addedIdx[a.Content]; ok {
				if !sameFlags(added[j], a) && !warned[a.Content] {
					warned[a.Content] = true
					p.note("added token %q has different settings in %s; the first model's are used", a.Content, name(o, i))
				}
				continue
			}
			addedIdx[a.Content] = len(added)
			added = append(added, a)
		}
	}
	out := toks[base].Clone()
	baseVocab := toks[base].Vocab()
	var plain []tokenizer.AddedToken
	for _, tok := range regular {
		if _, isAdded := addedIdx[tok]; isAdded {
			continue
		}
		if _, ok := baseVocab[tok]; !ok {
			plain = append(plain, tokenizer.NewAddedToken(tok))
		}
	}
	out.AddTokens(plain...)
	out.AddTokens(added...)
	return out
}

func sameFlags(a, b tokenizer.AddedToken) bool {
	a.ID, b.ID = 0, 0
	return a == b
}

// assignDefaults gives every output token the embedding models lacking it
// get: the configured source; else the one model that has it; zeros when
// none has it; the base model's when it has it; else the mean of the
// models that have it (mergekit's assign_embedding_sources).
func (p *Plan) assignDefaults(o Options, base int, toks []*tokenizer.Tokenizer) error {
	n := len(p.Tokens)
	p.Defaults = make([]Default, n)
	p.Forced = make([]bool, n)
	cfg := map[string]TokenOverride{}
	for _, t := range o.Tokens {
		cfg[t.Token] = t
	}
	hasBase := o.Base >= 0
	var missing []string
	for id, tok := range p.Tokens {
		if t, ok := cfg[tok]; ok {
			p.Forced[id] = t.Force
			if t.Source != nil {
				d, err := p.explicit(o, toks, id, tok, *t.Source)
				if err != nil {
					return err
				}
				p.Defaults[id] = d
				continue
			}
		}
		var have []int
		for m := range o.Models {
			if p.Perm[m][id] >= 0 {
				have = append(have, m)
			}
		}
		switch {
		case len(have) == 1:
			p.Defaults[id] = Default{Kind: Row, Model: have[0], Row: p.Perm[have[0]][id], Why: "only " + name(o, have[0]) + " has it"}
		case len(have) == 0:
			p.Defaults[id] = Default{Kind: Zero, Why: "no model has it"}
			missing = append(missing, tok)
		case hasBase && p.Perm[o.Base][id] >= 0:
			p.Defaults[id] = Default{Kind: Row, Model: o.Base, Row: p.Perm[o.Base][id], Why: "the base model's"}
		default:
			p.Defaults[id] = Default{Kind: Mean, Models: have, Why: "the mean of the models that have it"}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		shown := missing
		if len(shown) > 10 {
			shown = shown[:10]
		}
		p.note("%d tokens are in no model (zero embeddings): %s", len(missing), strings.Join(quoteAll(shown), ", "))
	}
	return nil
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = fmt.Sprintf("%q", x)
	}
	return out
}

func (p *Plan) explicit(o Options, toks []*tokenizer.Tokenizer, id int, tok string, s EmbedSource) (Default, error) {
	if s.Kind != "zero" && (s.Model < 0 || s.Model >= len(o.Models)) {
		return Default{}, fmt.Errorf("token %q: the source model is not part of the merge", tok)
	}
	switch s.Kind {
	case "zero":
		return Default{Kind: Zero, Why: "configured: zero"}, nil
	case "model":
		r := p.Perm[s.Model][id]
		if r < 0 {
			return Default{}, fmt.Errorf("token %q: configured source %s does not have it", tok, name(o, s.Model))
		}
		return Default{Kind: Row, Model: s.Model, Row: r, Why: "configured: " + name(o, s.Model)}, nil
	case "model_token":
		r := s.TokenID
		if r < 0 {
			var ok bool
			if r, ok = toks[s.Model].Vocab()[s.Token]; !ok {
				return Default{}, fmt.Errorf("token %q: configured source token %q is not in %s's vocabulary", tok, s.Token, name(o, s.Model))
			}
		}
		if vs := o.Models[s.Model].VocabSize; vs > 0 && r >= vs {
			return Default{}, fmt.Errorf("token %q: configured source row %d is out of range for %s (vocab_size %d)", tok, r, name(o, s.Model), vs)
		}
		return Default{Kind: Row, Model: s.Model, Row: r, Why: fmt.Sprintf("configured: %s row %d", name(o, s.Model), r)}, nil
	}
	return Default{}, fmt.Errorf("token %q: unknown source kind %q", tok, s.Kind)
}

// RowFunc returns row r of model m's original embedding (or output head)
// matrix, as float32 values; the slice is only read.
type RowFunc func(m, r int) ([]float32, error)

// Fill writes model m's permuted matrix rows [lo, hi) into dst
// ((hi - lo) x dim, row-major): its own row for tokens it has (unless
// forced), the default embedding otherwise; rows beyond the tokens
// (padding) are left to PadRow.
func (p *Plan) Fill(m, lo, hi, dim int, dst []float32, row RowFunc) error {
	if lo < 0 || hi > p.VocabSize || lo > hi || len(dst) < (hi-lo)*dim {
		return fmt.Errorf("vocab: rows [%d, %d) of %d, dst of %d for dim %d", lo, hi, p.VocabSize, len(dst), dim)
	}
	for id := lo; id < hi; id++ {
		out := dst[(id-lo)*dim : (id-lo+1)*dim]
		if id >= len(p.Tokens) {
			continue
		}
		if err := p.row(m, id, dim, out, row); err != nil {
			return err
		}
	}
	return nil
}

func (p *Plan) row(m, id, dim int, out []float32, row RowFunc) error {
	get := func(mm, r int) ([]float32, error) {
		v, err := row(mm, r)
		if err != nil {
			return nil, err
		}
		if len(v) != dim {
			return nil, fmt.Errorf("vocab: row %d of model %d has %d values, want %d", r, mm, len(v), dim)
		}
		return v, nil
	}
	if r := p.Perm[m][id]; r >= 0 && !p.Forced[id] {
		v, err := get(m, r)
		if err != nil {
			return err
		}
		copy(out, v)
		return nil
	}
	d := p.Defaults[id]
	switch d.Kind {
	case Row:
		v, err := get(d.Model, d.Row)
		if err != nil {
			return err
		}
		copy(out, v)
	case Mean:
		clear(out)
		for _, k := range d.Models {
			v, err := get(k, p.Perm[k][id])
			if err != nil {
				return err
			}
			for j := range out {
				out[j] += v[j]
			}
		}
		inv := 1 / float32(len(d.Models))
		for j := range out {
			out[j] *= inv
		}
	default:
		clear(out)
	}
	return nil
}

// PadRow returns the row model m's padding rows (ids len(Tokens) ..
// VocabSize-1) get: the mean of its permuted rows, as mergekit pads
// (following Hewitt's advice on initialising new embeddings). It reads
// every row once.
func (p *Plan) PadRow(m, dim int, row RowFunc) ([]float32, error) {
	sum := make([]float64, dim)
	buf := make([]float32, dim)
	for id := range p.Tokens {
		if err := p.row(m, id, dim, buf, row); err != nil {
			return nil, err
		}
		for j, v := range buf {
			sum[j] += float64(v)
		}
	}
	out := make([]float32, dim)
	for j := range out {
		out[j] = float32(sum[j] / float64(max(1, len(p.Tokens))))
	}
	return out, nil
}

// Same reports whether every model maps every output token to the same
// row as the output vocabulary (the merge needs no permutation).
func (p *Plan) Same() bool {
	if p.VocabSize != len(p.Tokens) {
		return false
	}
	for m := range p.Perm {
		for id, r := range p.Perm[m] {
			if r != id || p.Forced[id] {
				return false
			}
		}
	}
	return true
}
