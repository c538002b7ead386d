package vocab

import (
	"fmt"
	"sort"
	"strings"
)

// Diff describes how two models' vocabularies differ.
type Diff struct {
	// SizeA and SizeB are the embedding rows (vocab_size, else the number
	// of tokens).
	SizeA, SizeB int
	// OnlyA and OnlyB are tokens one model has and the other not (sorted,
	// at most 10 each); NOnlyA and NOnlyB count them all.
	OnlyA, OnlyB   []string
	NOnlyA, NOnlyB int
	// Moved counts tokens both have at different ids.
	Moved int
}

// Same reports whether the vocabularies are identical.
func (d Diff) Same() bool {
	return d.SizeA == d.SizeB && d.NOnlyA == 0 && d.NOnlyB == 0 && d.Moved == 0
}

// Compare compares two models' vocabularies (a nil tokenizer compares by
// size only).
func Compare(a, b Input) Diff {
	size := func(m Input) int {
		if m.VocabSize > 0 {
			return m.VocabSize
		}
		if m.Tokenizer != nil {
			return len(m.Tokenizer.Vocab())
		}
		return 0
	}
	d := Diff{SizeA: size(a), SizeB: size(b)}
	if a.Tokenizer == nil || b.Tokenizer == nil {
		return d
	}
	va, vb := a.Tokenizer.Vocab(), b.Tokenizer.Vocab()
	for tok, ia := range va {
		ib, ok := vb[tok]
		switch {
		case !ok:
			d.NOnlyA++
			d.OnlyA = append(d.OnlyA, tok)
		case ia != ib:
			d.Moved++
		}
	}
	for tok := range vb {
		if _, ok := va[tok]; !ok {
			d.NOnlyB++
			d.OnlyB = append(d.OnlyB, tok)
		}
	}
	for _, s := range []*[]string{&d.OnlyA, &d.OnlyB} {
		sort.Strings(*s)
		if len(*s) > 10 {
			*s = (*s)[:10]
		}
	}
	return d
}

// Describe explains, for a merge without a tokenizer section, what
// differing vocabularies mean: mergekit merges the common leading rows of
// the embeddings and output heads (the smallest vocab_size of the inputs),
// which is right only for tokens at the same ids.
func (d Diff) Describe(nameA, nameB string) string {
	if d.Same() {
		return fmt.Sprintf("%s and %s have the same vocabulary", nameA, nameB)
	}
	var parts []string
	if d.SizeA != d.SizeB {
		parts = append(parts, fmt.Sprintf("%s has %d embedding rows and %s %d", nameA, d.SizeA, nameB, d.SizeB))
	}
	if d.NOnlyA > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens only in %s (%s)", d.NOnlyA, nameA, strings.Join(quoteAll(d.OnlyA), ", ")))
	}
	if d.NOnlyB > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens only in %s (%s)", d.NOnlyB, nameB, strings.Join(quoteAll(d.OnlyB), ", ")))
	}
	if d.Moved > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens at different ids", d.Moved))
	}
	return fmt.Sprintf("the vocabularies differ: %s. Without tokenizer_source or tokenizer:, embeddings and output heads are merged row by row over the rows the models share (mergekit cuts them to the smallest, or to the base model's for task-vector methods), which mixes unrelated tokens wherever ids differ; set tokenizer_source: union (or base, or a model) to align them token by token",
		strings.Join(parts, "; "))
}
