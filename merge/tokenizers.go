package merge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/io/tokenizer"
	"github.com/wtool/wtool/merge/vocab"
	"github.com/wtool/wtool/tensors"
)

// A merge with Plan.Vocab (mergekit's tokenizer_source: / tokenizer:)
// builds the output vocabulary with merge/vocab, then merges every model's
// embedding and output head permuted into it: each model's own row for
// the tokens it has, and for the tokens it lacks the configured source or
// mergekit's default (the base model's row, else the one model having the
// token, else the mean of the models having it); padding rows
// (pad_to_multiple_of) are each model's mean permuted row. The permuted
// matrices are built in memory, as float32, one tensor at a time per model
// (vocabulary x hidden x 4 bytes each: 2 GiB for a 128256 x 4096 embedding):
// the one place a merge holds whole tensors. The output tokenizer files are
// written, config.json's vocab_size becomes the new size, and a chat
// template (chat_template:) goes into tokenizer_config.json.

// embeddingNames match the tensors indexed by token id: input embeddings
// and output heads.
var embeddingNames = regexp.MustCompile(`(^|\.)(embed_tokens|wte|word_embeddings|tok_embeddings|embed_out|lm_head|output)\.weight$`)

// vocabJob is a merge's output vocabulary and the row plans of its models.
type vocabJob struct {
	plan *vocab.Plan // nil with only a chat template
	// index maps a path (a model or the base) to its model index in plan
	index map[string]int
	// remap lists the tensors read permuted into the vocabulary
	remap map[string]bool
	files map[string][]byte
	size  int // the new vocab_size (0: unchanged)
}

// modelDir is the directory holding a model's config and tokenizer files.
func modelDir(path string) string {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return path
	}
	return filepath.Dir(path)
}

// loadTokenizer reads a model's tokenizer; nil when it has no tokenizer.json.
func loadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	dir := modelDir(path)
	if _, err := os.Stat(filepath.Join(dir, tokenizer.TokenizerFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	t, err := tokenizer.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// buildVocab builds the job's vocabulary (after its models are open,
// before their shapes are compared).
func (j *Job) buildVocab() error {
	p := j.Plan
	if p.Vocab == nil && p.ChatTemplate == "" {
		return nil
	}
	// mergekit's referenced models: the base first, then the models
	var refs []string
	if p.Base != "" {
		refs = append(refs, p.Base)
	}
	for _, mi := range p.Models {
		if !slices.Contains(refs, mi.Path) {
			refs = append(refs, mi.Path)
		}
	}
	vj := &vocabJob{index: map[string]int{}, remap: map[string]bool{}, files: map[string][]byte{}}
	var ins []vocab.Input
	var toks []*tokenizer.Tokenizer
	for i, r := range refs {
		vj.index[r] = i
		t, err := loadTokenizer(r)
		if err != nil {
			return err
		}
		n, _, err := tokenizer.ConfigVocabSize(modelDir(r))
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		ins = append(ins, vocab.Input{Name: r, Tokenizer: t, VocabSize: n})
		if t != nil {
			toks = append(toks, t)
		}
	}
	var out *tokenizer.Tokenizer
	if v := p.Vocab; v != nil {
		o := vocab.Options{Models: ins, Base: -1, PadToMultipleOf: v.PadToMultipleOf}
		if p.Base != "" {
			o.Base = 0
		}
		idx := func(path, what string) (int, error) {
			i, ok := vj.index[path]
			if !ok {
				return 0, fmt.Errorf("%s %s is not one of the merge's models", what, path)
			}
			return i, nil
		}
		switch v.Source {
		case "base":
			o.Source = vocab.Base
		case "union":
			o.Source = vocab.Union
		case "model":
			o.Source = vocab.Model
			i, err := idx(v.Model, "tokenizer source")
			if err != nil {
				return err
			}
			o.SourceModel = i
		default:
			return fmt.Errorf("unknown tokenizer source %q (want base, union or a model)", v.Source)
		}
		for _, t := range v.Tokens {
			to := vocab.TokenOverride{Token: t.Token, Force: t.Force}
			if t.Kind != "" {
				es := &vocab.EmbedSource{Kind: t.Kind, TokenID: t.TokenID, Token: t.ByToken}
				if t.Kind != "zero" {
					i, err := idx(t.Model, "the embedding source of token "+strconv.Quote(t.Token)+",")
					if err != nil {
						return err
					}
					es.Model = i
				}
				to.Source = es
			}
			o.Tokens = append(o.Tokens, to)
		}
		vp, err := vocab.Build(o)
		if err != nil {
			return err
		}
		vj.plan = vp
		for _, n := range vp.Notes {
			j.Note("%s", n)
		}
		out = vp.Tokenizer
		if !vp.Same() {
			for _, e := range j.Models[0].Entries() {
				if embeddingNames.MatchString(e.Name) && len(e.Shape) == 2 && e.DType.IsFloat() {
					vj.remap[e.Name] = true
				}
			}
			vj.size = vp.VocabSize
		}
	} else {
		// a chat template alone: the base's (else the first model's) tokenizer
		t, err := loadTokenizer(refs[0])
		if err != nil {
			return err
		}
		if t == nil {
			return fmt.Errorf("chat_template: %s has no tokenizer.json to write it into", refs[0])
		}
		out = t.Clone()
	}
	if p.ChatTemplate != "" {
		tmpl, ok, err := vocab.ResolveChatTemplate(p.ChatTemplate, toks)
		if err != nil {
			return fmt.Errorf("chat_template: %w", err)
		}
		if ok {
			out.SetChatTemplate(tmpl)
		} else {
			j.Note("chat_template %s: no model has a chat template; none is set", p.ChatTemplate)
		}
	}
	files, err := out.Files()
	if err != nil {
		return err
	}
	vj.files = files
	j.vocab = vj
	return nil
}

// sameArchitecture compares two models' tensors, but for the embeddings
// and heads read permuted into the output vocabulary: only their width.
func (j *Job) sameArchitecture(a, b *checkpoint.Model) error {
	if j.vocab == nil || len(j.vocab.remap) == 0 {
		return checkpoint.SameArchitecture(a, b)
	}
	for _, pair := range [][2]*checkpoint.Model{{a, b}, {b, a}} {
		x, y := pair[0], pair[1]
		for _, n := range x.Names() {
			xi, _ := x.Info(n)
			yi, ok := y.Info(n)
			switch {
			case !ok:
				return fmt.Errorf("tensor %q is in %s but not in %s", n, x.Path, y.Path)
			case j.vocab.remap[n]:
				if len(yi.Shape) != 2 || xi.Shape[1] != yi.Shape[1] {
					return fmt.Errorf("tensor %q has shape %v in %s but %v in %s (the embedding widths differ)", n, xi.Shape, x.Path, yi.Shape, y.Path)
				}
			case !slices.Equal(xi.Shape, yi.Shape):
				return fmt.Errorf("tensor %q has shape %v in %s but %v in %s", n, xi.Shape, x.Path, yi.Shape, y.Path)
			}
		}
	}
	return nil
}

// vocabShape returns an output entry's shape: the new vocabulary's rows
// for a permuted tensor.
func (j *Job) vocabShape(e safetensors.Entry) safetensors.Entry {
	if j.vocab != nil && j.vocab.remap[e.Name] {
		e.Shape = []int64{int64(j.vocab.size), e.Shape[1]}
	}
	return e
}

// vocabInput returns model m's tensor permuted into the output
// vocabulary, in memory (float32).
func (j *Job) vocabInput(m *checkpoint.Model, name string) (*Input, error) {
	vj := j.vocab
	vi, ok := vj.index[m.Path]
	if !ok {
		return nil, fmt.Errorf("%s is not in the vocabulary plan", m.Path)
	}
	models := map[int]*checkpoint.Model{}
	for _, mm := range j.opened {
		if k, ok := vj.index[mm.Path]; ok {
			models[k] = mm
		}
	}
	cache := map[int]*tensors.Tensor{}
	row := func(k, r int) ([]float32, error) {
		x, ok := cache[k]
		if !ok {
			mm := models[k]
			if mm == nil {
				return nil, fmt.Errorf("model %d of the vocabulary is not open", k)
			}
			t, err := mm.Tensor(name)
			if err != nil {
				return nil, err
			}
			cache[k], x = t, t
		}
		if len(x.Shape) != 2 || r < 0 || int64(r) >= x.Shape[0] {
			return nil, fmt.Errorf("%s: tensor %q has no row %d", models[k].Path, name, r)
		}
		dim := int(x.Shape[1])
		es := x.DType.Bits() / 8
		out := make([]float32, dim)
		vals := make([]float64, dim)
		err := safetensors.Guard("", name, func() error {
			return tensors.DecodeFloat64(vals, x.Data[r*dim*es:(r+1)*dim*es], x.DType)
		})
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", models[k].Path, name, err)
		}
		for i, v := range vals {
			out[i] = float32(v)
		}
		return out, nil
	}
	info, _ := m.Info(name)
	dim := int(info.Shape[1])
	rows := vj.size
	dst := make([]float32, rows*dim)
	ntok := len(vj.plan.Tokens)
	if err := vj.plan.Fill(vi, 0, ntok, dim, dst[:ntok*dim], row); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
	}
	if rows > ntok {
		pad, err := vj.plan.PadRow(vi, dim, row)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
		}
		for r := ntok; r < rows; r++ {
			copy(dst[r*dim:(r+1)*dim], pad)
		}
	}
	data := make([]byte, 4*len(dst))
	for i, v := range dst {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return &Input{File: m.Path + " (permuted into the output vocabulary)", Tensor: name, DType: tensors.F32,
		Shape: []int64{int64(rows), int64(dim)}, Data: data, allowNonFinite: j.Plan.AllowNonFinite}, nil
}

// withVocabFiles adds the output tokenizer files and the new vocab_size to
// a directory output.
func (j *Job) withVocabFiles(opts checkpoint.WriteOptions) (checkpoint.WriteOptions, error) {
	if j.vocab == nil {
		return opts, nil
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range j.vocab.files {
			if !yield(k) {
				return
			}
		}
	}) {
		opts = withOutputFile(opts, name, j.vocab.files[name])
	}
	if j.vocab.size == 0 {
		return opts, nil
	}
	src, ok, err := outputConfig(opts, j.Models[0])
	if err != nil || !ok {
		return opts, err
	}
	re := regexp.MustCompile(`("vocab_size"\s*:\s*)(\d+)`)
	loc := re.FindSubmatchIndex(src)
	if loc == nil {
		return opts, nil
	}
	out := string(src[:loc[4]]) + strconv.Itoa(j.vocab.size) + string(src[loc[5]:])
	return withOutputFile(opts, "config.json", []byte(out)), nil
}

// vocabMismatch explains differing embedding shapes between models merged
// without a tokenizer section, as mergekit's behaviour would differ.
func vocabMismatch(err error, a, b string) error {
	if !strings.Contains(err.Error(), "shape") || !embeddingNames.MatchString(quotedName(err.Error())) {
		return err
	}
	ta, _ := loadTokenizer(a)
	tb, _ := loadTokenizer(b)
	na, _, _ := tokenizer.ConfigVocabSize(modelDir(a))
	nb, _, _ := tokenizer.ConfigVocabSize(modelDir(b))
	d := vocab.Compare(vocab.Input{Name: a, Tokenizer: ta, VocabSize: na}, vocab.Input{Name: b, Tokenizer: tb, VocabSize: nb})
	return fmt.Errorf("%w. %s; wtool refuses it: give tokenizer_source: union (or base, or a model) in a --config to merge the embeddings token by token", err, d.Describe(a, b))
}

func quotedName(s string) string {
	i := strings.IndexByte(s, '"')
	if i < 0 {
		return ""
	}
	k := strings.IndexByte(s[i+1:], '"')
	if k < 0 {
		return ""
	}
	return s[i+1 : i+1+k]
}
