// Package tokenizer reads and writes the tokenizer files of a Hugging Face
// model directory — tokenizer.json (the "fast" tokenizer of the tokenizers
// library), tokenizer_config.json, special_tokens_map.json — as far as
// merging needs: the vocabulary with its ids, the added tokens and their
// flags, the chat template, adding tokens with the tokenizers library's id
// rules, and stripping tokens beyond a model's vocab_size.
//
// Everything it does not need is carried through unchanged: a Tokenizer
// written back differs from the files it was read from only in what was
// changed (added tokens, stripped entries, chat template).
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// File names in a model directory.
const (
	TokenizerFile     = "tokenizer.json"
	ConfigFile        = "tokenizer_config.json"
	SpecialTokensFile = "special_tokens_map.json"
	ChatTemplateFile  = "chat_template.jinja"
)

// DonorFiles are the files mergekit copies from the base model (else the
// first model) into a merged model that needs no tokenizer surgery, when
// they exist — when a chat template is set, the tokenizer is rewritten
// instead (Load, SetChatTemplate, Write).
var DonorFiles = []string{
	ConfigFile, SpecialTokensFile, TokenizerFile, "tokenizer.model", "added_tokens.json", "merges.txt",
	ChatTemplateFile, "generation_config.json", "chat_template.json", "video_preprocessor_config.json",
}

// AddedToken is an entry of tokenizer.json's added_tokens: a token matched
// before the model's own tokenization, with its matching flags.
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// NewAddedToken is the token transformers' add_tokens(str) adds: not
// special, normalized, no stripping.
func NewAddedToken(content string) AddedToken {
	return AddedToken{Content: content, Normalized: true}
}

// sameFlags reports whether two added tokens are equal apart from their id
// (the tokenizers library's AddedToken equality).
func (a AddedToken) sameFlags(b AddedToken) bool {
	a.ID, b.ID = 0, 0
	return a == b
}

// Tokenizer is a model's tokenizer files.
type Tokenizer struct {
	// Dir is the directory it was read from.
	Dir string
	// ModelType is tokenizer.json's model.type: BPE, WordPiece, WordLevel or
	// Unigram.
	ModelType string

	// vocab is the model's own vocabulary (model.vocab), token -> id.
	vocab map[string]int
	// added are the added tokens by id; addedIdx maps their contents to
	// ids (nil when stale).
	added    map[int]AddedToken
	addedIdx map[string]int

	top      []kv // tokenizer.json, in order
	model    []kv // its "model" object, in order
	config   []kv // tokenizer_config.json, in order (nil if absent)
	special  []byte
	template []byte // chat_template.jinja, nil if absent
	dirty    struct{ model, added, config bool }
}

// Load reads dir's tokenizer.json and, when present, tokenizer_config.json,
// special_tokens_map.json and chat_template.jinja. A directory with only a
// slow tokenizer (tokenizer.model, vocab.json) is an error saying so.
func Load(dir string) (*Tokenizer, error) {
	path := filepath.Join(dir, TokenizerFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		for _, slow := range []string{"tokenizer.model", "vocab.json", "spiece.model"} {
			if _, err2 := os.Stat(filepath.Join(dir, slow)); err2 == nil {
				return nil, fmt.Errorf("%s: no %s, only the slow tokenizer's %s: wtool reads tokenizer.json; "+
					"write one with transformers: AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)", dir, TokenizerFile, slow)
			}
		}
		return nil, fmt.Errorf("%s: no %s", dir, TokenizerFile)
	}
	if err != nil {
		return nil, err
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t.Dir = dir
	if b, err := os.ReadFile(filepath.Join(dir, ConfigFile)); err == nil {
		if t.config, err = orderedObject(b); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, SpecialTokensFile)); err == nil {
		t.special = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, ChatTemplateFile)); err == nil {
		t.template = b
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return t, nil
}

// Parse reads the contents of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	top, err := orderedObject(data)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{top: top, added: map[int]AddedToken{}}
	rawModel, ok := get(top, "model")
	if !ok {
		return nil, errors.New("no model")
	}
	if t.model, err = orderedObject(rawModel); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if raw, ok := get(t.model, "type"); ok {
		if err := json.Unmarshal(raw, &t.ModelType); err != nil {
			return nil, fmt.Errorf("model.type: %w", err)
		}
	}
	rawVocab, ok := get(t.model, "vocab")
	if !ok {
		return nil, errors.New("model has no vocab")
	}
	switch t.ModelType {
	case "Unigram":
		var pieces [][2]json.RawMessage
		if err := json.Unmarshal(rawVocab, &pieces); err != nil {
			return nil, fmt.Errorf("model.vocab: %w", err)
		}
		t.vocab = make(map[string]int, len(pieces))
		for i, p := range pieces {
			var s string
			if err := json.Unmarshal(p[0], &s); err != nil {
				return nil, fmt.Errorf("model.vocab[%d]: %w", i, err)
			}
			if _, dup := t.vocab[s]; !dup { // the first id of a piece wins, as in tokenizers
				t.vocab[s] = i
			}
		}
	case "BPE", "WordPiece", "WordLevel", "":
		if err := json.Unmarshal(rawVocab, &t.vocab); err != nil {
			return nil, fmt.Errorf("model.vocab: %w", err)
		}
	default:
		return nil, fmt.Errorf("unsupported tokenizer model type %q", t.ModelType)
	}
	for tok, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("model.vocab: token %q has id %d", tok, id)
		}
	}
	if raw, ok := get(top, "added_tokens"); ok && string(raw) != "null" {
		var list []AddedToken
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("added_tokens: %w", err)
		}
		for _, a := range list {
			if a.ID < 0 {
				return nil, fmt.Errorf("added token %q has id %d", a.Content, a.ID)
			}
			t.added[a.ID] = a
		}
	}
	return t, nil
}

// Clone returns an independent copy.
func (t *Tokenizer) Clone() *Tokenizer {
	c := *t
	c.vocab = make(map[string]int, len(t.vocab))
	for k, v := range t.vocab {
		c.vocab[k] = v
	}
	c.addedIdx = nil
	c.added = make(map[int]AddedToken, len(t.added))
	for k, v := range t.added {
		c.added[k] = v
	}
	c.top = slices.Clone(t.top)
	c.model = slices.Clone(t.model)
	c.config = slices.Clone(t.config)
	return &c
}

// ModelVocabSize is the size of the model's own vocabulary, without added
// tokens (transformers' tokenizer.vocab_size).
func (t *Tokenizer) ModelVocabSize() int { return len(t.vocab) }

// Vocab returns every token with its id: the model's vocabulary and the
// added tokens (an added token's id wins), as transformers' get_vocab().
func (t *Tokenizer) Vocab() map[string]int {
	v := make(map[string]int, len(t.vocab)+len(t.added))
	for k, id := range t.vocab {
		v[k] = id
	}
	for id, a := range t.added {
		v[a.Content] = id
	}
	return v
}

// ID returns a token's id (added tokens first, then the model's vocabulary,
// as the tokenizers library looks it up).
func (t *Tokenizer) ID(token string) (int, bool) {
	if id, ok := t.addedID(token); ok {
		return id, true
	}
	id, ok := t.vocab[token]
	return id, ok
}

// Added returns the added tokens sorted by id (transformers'
// added_tokens_decoder).
func (t *Tokenizer) Added() []AddedToken {
	out := make([]AddedToken, 0, len(t.added))
	for _, a := range t.added {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// IsAdded reports whether the token is an added token.
func (t *Tokenizer) IsAdded(token string) bool {
	_, ok := t.addedID(token)
	return ok
}

// AddTokens adds tokens as the tokenizers library's add_tokens does (what
// transformers' tokenizer.add_tokens calls), and returns how many it
// changed: an empty token, or one already added with the same flags, is
// ignored; a token the vocabulary has keeps its id (and becomes an added
// token with these flags); a new one gets the next id: the largest added id
// plus one when that is at least the model vocabulary's size, else that
// size. The ID field of the arguments is ignored.
func (t *Tokenizer) AddTokens(toks ...AddedToken) int {
	modelSize := len(t.vocab)
	next := modelSize
	if len(t.added) > 0 {
		mx := -1
		for id := range t.added {
			mx = max(mx, id)
		}
		if mx >= modelSize || modelSize == 0 {
			next = mx + 1
		}
	}
	n := 0
	for _, tok := range toks {
		if tok.Content == "" {
			continue
		}
		if id, ok := t.addedID(tok.Content); ok && t.added[id].sameFlags(tok) {
			continue
		}
		id, ok := t.ID(tok.Content)
		if !ok {
			id = next
			next++
		}
		tok.ID = id
		if old, had := t.added[id]; had && old.Content != tok.Content {
			t.addedIdx = nil
		} else if t.addedIdx != nil {
			t.addedIdx[tok.Content] = id
		}
		t.added[id] = tok
		t.dirty.added = true
		n++
	}
	return n
}

func (t *Tokenizer) addedID(token string) (int, bool) {
	if t.addedIdx == nil {
		t.addedIdx = make(map[string]int, len(t.added))
		for id, a := range t.added {
			if old, dup := t.addedIdx[a.Content]; !dup || id < old {
				t.addedIdx[a.Content] = id
			}
		}
	}
	id, ok := t.addedIdx[token]
	return id, ok
}

// Strip removes every token whose id is vocabSize or more (the padding
// entries of a tokenizer larger than its model's embedding), as mergekit
// does for the base model's tokenizer: from the added tokens, from the
// vocabulary, and the BPE merges that involve them. Only BPE tokenizers can
// be stripped (mergekit's limit too). It reports how many tokens were
// removed.
func (t *Tokenizer) Strip(vocabSize int) (int, error) {
	var unused []string
	for tok, id := range t.Vocab() {
		if id >= vocabSize {
			unused = append(unused, tok)
		}
	}
	if len(unused) == 0 {
		return 0, nil
	}
	if t.ModelType != "BPE" {
		return 0, fmt.Errorf("%d tokens have ids >= vocab_size %d, and only BPE tokenizers can be stripped (this is %s)", len(unused), vocabSize, t.ModelType)
	}
	gone := map[string]bool{}
	for _, tok := range unused {
		gone[tok] = true
	}
	for id := range t.added {
		if id >= vocabSize {
			delete(t.added, id)
			t.addedIdx = nil
			t.dirty.added = true
		}
	}
	for tok := range gone {
		if _, ok := t.vocab[tok]; ok {
			delete(t.vocab, tok)
			t.dirty.model = true
		}
	}
	if raw, ok := get(t.model, "merges"); ok && t.dirty.model {
		var merges []json.RawMessage
		if err := json.Unmarshal(raw, &merges); err != nil {
			return 0, fmt.Errorf("model.merges: %w", err)
		}
		kept := merges[:0]
		for i, m := range merges {
			var pair []string
			var s string
			if err := json.Unmarshal(m, &s); err == nil {
				pair = strings.Split(s, " ")
				if len(pair) != 2 {
					return 0, fmt.Errorf("model.merges[%d]: unexpected merge %q", i, s)
				}
			} else if err := json.Unmarshal(m, &pair); err != nil {
				return 0, fmt.Errorf("model.merges[%d]: %w", i, err)
			}
			if !gone[pair[0]] && !gone[pair[1]] {
				kept = append(kept, m)
			}
		}
		b, err := json.Marshal(kept)
		if err != nil {
			return 0, err
		}
		set(&t.model, "merges", b)
	}
	return len(unused), nil
}

// ChatTemplate returns the tokenizer's chat template as transformers finds
// it: chat_template.jinja, else tokenizer_config.json's chat_template (a
// string, or the "default" entry of a list of named templates). ok is false
// when there is none.
func (t *Tokenizer) ChatTemplate() (string, bool) {
	if t.template != nil {
		return string(t.template), true
	}
	raw, ok := get(t.config, "chat_template")
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if json.Unmarshal(raw, &named) == nil {
		for _, n := range named {
			if n.Name == "default" {
				return n.Template, n.Template != ""
			}
		}
	}
	return "", false
}

// SetChatTemplate sets the chat template: in tokenizer_config.json's
// chat_template, and a chat_template.jinja read with the tokenizer is
// dropped (it would take precedence).
func (t *Tokenizer) SetChatTemplate(s string) {
	b, _ := json.Marshal(s)
	set(&t.config, "chat_template", b)
	t.template = nil
	t.dirty.config = true
}

// ConfigString returns a string field of tokenizer_config.json (for
// instance "bos_token"; an {"content": ...} object counts as its content).
func (t *Tokenizer) ConfigString(key string) (string, bool) {
	raw, ok := get(t.config, key)
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var o struct {
		Content *string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Content != nil {
		return *o.Content, true
	}
	return "", false
}

// Files returns the tokenizer files to write in a model directory, by
// name: tokenizer.json, and tokenizer_config.json, special_tokens_map.json
// and chat_template.jinja when the tokenizer has them. tokenizer_config.json's
// added_tokens_decoder is rewritten from the added tokens when they
// changed.
func (t *Tokenizer) Files() (map[string][]byte, error) {
	out := map[string][]byte{}
	top := slices.Clone(t.top)
	if t.dirty.model {
		b, err := encodeOrdered(t.modelWithVocab())
		if err != nil {
			return nil, err
		}
		set(&top, "model", b)
	}
	if t.dirty.added {
		b, err := json.Marshal(t.Added())
		if err != nil {
			return nil, err
		}
		set(&top, "added_tokens", b)
	}
	b, err := encodeOrdered(top)
	if err != nil {
		return nil, err
	}
	out[TokenizerFile] = b
	if t.config != nil || t.dirty.config {
		cfg := slices.Clone(t.config)
		if t.dirty.added {
			if _, ok := get(cfg, "added_tokens_decoder"); ok {
				b, err := t.addedTokensDecoder()
				if err != nil {
					return nil, err
				}
				set(&cfg, "added_tokens_decoder", b)
			}
		}
		b, err := encodeOrdered(cfg)
		if err != nil {
			return nil, err
		}
		out[ConfigFile] = b
	}
	if t.special != nil {
		out[SpecialTokensFile] = bytes.Clone(t.special)
	}
	if t.template != nil {
		out[ChatTemplateFile] = bytes.Clone(t.template)
	}
	return out, nil
}

func (t *Tokenizer) modelWithVocab() []kv {
	m := slices.Clone(t.model)
	type entry struct {
		tok string
		id  int
	}
	var es []entry
	for tok, id := range t.vocab {
		es = append(es, entry{tok, id})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id || (es[i].id == es[j].id && es[i].tok < es[j].tok) })
	var b bytes.Buffer
	if t.ModelType == "Unigram" {
		// Unigram vocabularies are lists; stripping is refused for them
		raw, _ := get(t.model, "vocab")
		b.Write(raw)
	} else {
		b.WriteByte('{')
		for i, e := range es {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(e.tok)
			fmt.Fprintf(&b, "%s:%d", k, e.id)
		}
		b.WriteByte('}')
	}
	set(&m, "vocab", b.Bytes())
	return m
}

// addedTokensDecoder writes transformers' added_tokens_decoder: id (as a
// string) -> the token's fields, in id order.
func (t *Tokenizer) addedTokensDecoder() ([]byte, error) {
	var fields []kv
	for _, a := range t.Added() {
		b, err := json.Marshal(struct {
			Content    string `json:"content"`
			LStrip     bool   `json:"lstrip"`
			Normalized bool   `json:"normalized"`
			RStrip     bool   `json:"rstrip"`
			SingleWord bool   `json:"single_word"`
			Special    bool   `json:"special"`
		}{a.Content, a.LStrip, a.Normalized, a.RStrip, a.SingleWord, a.Special})
		if err != nil {
			return nil, err
		}
		fields = append(fields, kv{fmt.Sprint(a.ID), b})
	}
	return encodeOrdered(fields)
}

// Write writes the tokenizer files into dir (which must exist), each to a
// temporary file renamed at the end.
func (t *Tokenizer) Write(dir string) error {
	files, err := t.Files()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := writeAtomic(filepath.Join(dir, n), files[n]); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ConfigVocabSize reads the model's vocabulary size from dir/config.json:
// vocab_size, or text_config.vocab_size for multimodal models. ok is false
// when config.json has neither (or does not exist).
func ConfigVocabSize(dir string) (n int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var cfg struct {
		VocabSize  *int `json:"vocab_size"`
		TextConfig *struct {
			VocabSize *int `json:"vocab_size"`
		} `json:"text_config"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, false, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	switch {
	case cfg.VocabSize != nil:
		return *cfg.VocabSize, true, nil
	case cfg.TextConfig != nil && cfg.TextConfig.VocabSize != nil:
		return *cfg.TextConfig.VocabSize, true, nil
	}
	return 0, false, nil
}
