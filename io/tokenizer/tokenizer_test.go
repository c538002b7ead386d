package tokenizer

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const bpe = `{
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "model": {"type": "BPE", "dropout": null, "vocab": {"<unk>": 0, "<s>": 1, "a": 2, "b": 3, "ab": 4, "p": 5, "q": 6}, "merges": ["a b", ["p", "q"], "a p"]}
}`

func parse(t *testing.T, s string) *Tokenizer {
	t.Helper()
	tok, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestParseVocab(t *testing.T) {
	tok := parse(t, bpe)
	if tok.ModelType != "BPE" || tok.ModelVocabSize() != 7 {
		t.Errorf("type %s size %d", tok.ModelType, tok.ModelVocabSize())
	}
	want := map[string]int{"<unk>": 0, "<s>": 1, "a": 2, "b": 3, "ab": 4, "p": 5, "q": 6}
	if got := tok.Vocab(); !maps.Equal(got, want) {
		t.Errorf("vocab %v", got)
	}
	if ad := tok.Added(); len(ad) != 2 || ad[1] != (AddedToken{ID: 1, Content: "<s>", Special: true}) {
		t.Errorf("added %+v", ad)
	}
	u := parse(t, `{"added_tokens": [], "model": {"type": "Unigram", "vocab": [["<pad>", 0], ["x", -1.5], ["y", -2], ["x", -3]]}}`)
	if got := u.Vocab(); !maps.Equal(got, map[string]int{"<pad>": 0, "x": 1, "y": 2}) || u.ModelVocabSize() != 3 {
		t.Errorf("unigram vocab %v", got)
	}
	for _, bad := range []string{`[]`, `{"model": {"type": "BPE"}}`, `{"model": {"type": "Weird", "vocab": {}}}`, `{"a": 1, "a": 2}`,
		`{"model": {"type": "BPE", "vocab": {"a": -1}}}`, `{"model": {"type": "BPE", "vocab": {}}} x`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s parses", bad)
		}
	}
}

// AddTokens assigns ids as the tokenizers library's AddedVocabulary.
func TestAddTokens(t *testing.T) {
	tok := parse(t, bpe)
	// a new token after the model vocabulary (the added ids are below it)
	if n := tok.AddTokens(NewAddedToken("new1"), NewAddedToken("new2")); n != 2 {
		t.Errorf("added %d", n)
	}
	if id, _ := tok.ID("new1"); id != 7 {
		t.Errorf("new1 at %d", id)
	}
	if id, _ := tok.ID("new2"); id != 8 {
		t.Errorf("new2 at %d", id)
	}
	// an existing added token with the same flags: ignored; with other flags: updated in place
	if n := tok.AddTokens(AddedToken{Content: "<s>", Special: true}); n != 0 {
		t.Error("same token re-added")
	}
	if n := tok.AddTokens(NewAddedToken("<s>")); n != 1 || tok.added[1].Special {
		t.Errorf("flags not updated: %+v", tok.added[1])
	}
	// a vocabulary token becomes an added token with its id
	if n := tok.AddTokens(AddedToken{Content: "ab", Special: true}); n != 1 || tok.added[4].Content != "ab" {
		t.Errorf("ab: %+v", tok.added)
	}
	if tok.AddTokens(AddedToken{Content: ""}) != 0 {
		t.Error("empty token added")
	}
	if len(tok.Vocab()) != 9 {
		t.Errorf("vocab has %d tokens", len(tok.Vocab()))
	}
	// the next id follows the largest added id once that is past the model
	t2 := parse(t, `{"added_tokens": [{"id": 10, "content": "<x>", "special": true}], "model": {"type": "BPE", "vocab": {"a": 0, "b": 1}}}`)
	t2.AddTokens(NewAddedToken("c"))
	if id, _ := t2.ID("c"); id != 11 {
		t.Errorf("c at %d, want 11", id)
	}
}

func TestStrip(t *testing.T) {
	tok := parse(t, bpe)
	n, err := tok.Strip(5) // drops p, q and the merges using them
	if err != nil || n != 2 {
		t.Fatalf("%d %v", n, err)
	}
	files, err := tok.Files()
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Model struct {
			Type    string            `json:"type"`
			Dropout any               `json:"dropout"`
			Vocab   map[string]int    `json:"vocab"`
			Merges  []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(files[TokenizerFile], &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Model.Vocab) != 5 || out.Model.Type != "BPE" || len(out.Model.Merges) != 1 || string(out.Model.Merges[0]) != `"a b"` {
		t.Errorf("stripped model %+v", out.Model)
	}
	if n, _ := tok.Strip(5); n != 0 {
		t.Error("second strip removes more")
	}
	u := parse(t, `{"model": {"type": "Unigram", "vocab": [["x", 0], ["y", -1]]}}`)
	if _, err := u.Strip(1); err == nil || !strings.Contains(err.Error(), "only BPE") {
		t.Errorf("unigram strip: %v", err)
	}
}

// Files change only what changed: an untouched tokenizer writes the same
// JSON values, in the same key order.
func TestFilesKeepEverythingElse(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(bpe), 0o644)
	cfg := `{"b_key": 1, "added_tokens_decoder": {"0": {"content": "<unk>", "special": true}}, "a_key": "x", "chat_template": [{"name": "default", "template": "{{ x }} default"}, {"name": "tool_use", "template": "t"}]}`
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(cfg), 0o644)
	os.WriteFile(filepath.Join(dir, SpecialTokensFile), []byte(`{"bos_token": "<s>"}`), 0o644)
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := tok.ChatTemplate(); !ok || s != "{{ x }} default" {
		t.Errorf("named templates: %q", s)
	}
	files, err := tok.Files()
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, files[TokenizerFile], []byte(bpe))
	sameJSON(t, files[ConfigFile], []byte(cfg))
	if string(files[SpecialTokensFile]) != `{"bos_token": "<s>"}` {
		t.Errorf("special tokens map %s", files[SpecialTokensFile])
	}
	if keys := topKeys(t, files[ConfigFile]); !reflect.DeepEqual(keys, []string{"b_key", "added_tokens_decoder", "a_key", "chat_template"}) {
		t.Errorf("key order %v", keys)
	}
	// adding a token rewrites added_tokens and added_tokens_decoder; setting a template sets chat_template
	tok.AddTokens(NewAddedToken("zz"))
	tok.SetChatTemplate("{% for m in messages %}{{ m }}{% endfor %}")
	files, _ = tok.Files()
	var tj struct {
		AddedTokens []AddedToken `json:"added_tokens"`
	}
	json.Unmarshal(files[TokenizerFile], &tj)
	if len(tj.AddedTokens) != 3 || tj.AddedTokens[2] != (AddedToken{ID: 7, Content: "zz", Normalized: true}) {
		t.Errorf("added tokens %+v", tj.AddedTokens)
	}
	var cj struct {
		Decoder  map[string]map[string]any `json:"added_tokens_decoder"`
		Template string                    `json:"chat_template"`
		AKey     string                    `json:"a_key"`
	}
	json.Unmarshal(files[ConfigFile], &cj)
	if cj.Decoder["7"]["content"] != "zz" || cj.Decoder["1"]["special"] != true || cj.Template != "{% for m in messages %}{{ m }}{% endfor %}" || cj.AKey != "x" {
		t.Errorf("config %+v", cj)
	}
	if err := tok.Write(dir); err != nil {
		t.Fatal(err)
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := again.ID("zz"); id != 7 {
		t.Error("written tokenizer lost the token")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestChatTemplateFileWins(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(bpe), 0o644)
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"chat_template": "from the config {{ x }}"}`), 0o644)
	os.WriteFile(filepath.Join(dir, ChatTemplateFile), []byte("from the jinja file {{ x }}"), 0o644)
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := tok.ChatTemplate(); s != "from the jinja file {{ x }}" {
		t.Errorf("got %q", s)
	}
	tok.SetChatTemplate("new {{ y }}")
	files, _ := tok.Files()
	if _, ok := files[ChatTemplateFile]; ok {
		t.Error("the old chat_template.jinja would override the new template")
	}
	if s, _ := tok.ChatTemplate(); s != "new {{ y }}" {
		t.Errorf("got %q", s)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no tokenizer.json") {
		t.Errorf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.model"), []byte("x"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "slow tokenizer's tokenizer.model") {
		t.Errorf("slow only: %v", err)
	}
	os.WriteFile(filepath.Join(dir, TokenizerFile), []byte(`{"model": 3}`), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, TokenizerFile)) {
		t.Errorf("bad json names the file: %v", err)
	}
}

func TestConfigVocabSize(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ConfigVocabSize(dir); ok || err != nil {
		t.Error("no config.json")
	}
	for cfg, want := range map[string]int{`{"vocab_size": 32000}`: 32000, `{"text_config": {"vocab_size": 262144}}`: 262144, `{"hidden_size": 1}`: -1} {
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644)
		n, ok, err := ConfigVocabSize(dir)
		if err != nil || (want < 0) == ok || (ok && n != want) {
			t.Errorf("%s: %d %v %v", cfg, n, ok, err)
		}
	}
}

func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(want, &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("JSON differs:\n%s\nwant\n%s", got, want)
	}
}

func topKeys(t *testing.T, b []byte) []string {
	o, err := orderedObject(b)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range o {
		keys = append(keys, m.key)
	}
	return keys
}
