package vocab

import (
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/tokenizer"
)

// The fixtures (testdata/, written by hand):
//   - base:   BPE, <unk> <s> </s> a b c ab bc (ids 0-7), vocab_size 8
//   - chatml: base's plus the special added tokens <|im_start|> 8, <|im_end|> 9, vocab_size 10
//   - padded: base's plus d 8, cd 9, and padding added tokens <pad0> 10, <pad1> 11 beyond vocab_size 10
//   - other:  <unk> <s> </s> c b a x (a and c swapped, no ab/bc, x of its own), vocab_size 7 (text_config)
func load(t *testing.T, names ...string) []Input {
	t.Helper()
	var out []Input
	for _, n := range names {
		dir := filepath.Join("testdata", n)
		tok, err := tokenizer.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		vs, _, err := tokenizer.ConfigVocabSize(dir)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Input{Name: n, Tokenizer: tok, VocabSize: vs})
	}
	return out
}

func build(t *testing.T, o Options) *Plan {
	t.Helper()
	p, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnion(t *testing.T) {
	p := build(t, Options{Models: load(t, "base", "chatml", "padded", "other"), Base: 0, Source: Union})
	wantTokens := []string{"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "d", "cd", "x", "<|im_start|>", "<|im_end|>"}
	if !slices.Equal(p.Tokens, wantTokens) || p.VocabSize != 13 {
		t.Fatalf("tokens %q (%d)", p.Tokens, p.VocabSize)
	}
	wantPerm := [][]int{
		{0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, -1, -1},
		{0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1, 8, 9},
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1, -1, -1},
		{0, 1, 2, 5, 4, 3, -1, -1, -1, -1, 6, -1, -1},
	}
	for m := range wantPerm {
		if !slices.Equal(p.Perm[m], wantPerm[m]) {
			t.Errorf("perm %d: %v, want %v", m, p.Perm[m], wantPerm[m])
		}
	}
	// defaults: the base model's when it has the token, else the only model that has it
	for id, want := range []Default{
		{Kind: Row, Model: 0, Row: 0}, {Kind: Row, Model: 0, Row: 1}, {Kind: Row, Model: 0, Row: 2},
		{Kind: Row, Model: 0, Row: 3}, {Kind: Row, Model: 0, Row: 4}, {Kind: Row, Model: 0, Row: 5},
		{Kind: Row, Model: 0, Row: 6}, {Kind: Row, Model: 0, Row: 7},
		{Kind: Row, Model: 2, Row: 8}, {Kind: Row, Model: 2, Row: 9}, {Kind: Row, Model: 3, Row: 6},
		{Kind: Row, Model: 1, Row: 8}, {Kind: Row, Model: 1, Row: 9},
	} {
		d := p.Defaults[id]
		if d.Kind != want.Kind || d.Model != want.Model || d.Row != want.Row || p.Forced[id] {
			t.Errorf("default of %q: %+v, want %+v", p.Tokens[id], d, want)
		}
	}
	// the output tokenizer: the base's, the new plain tokens, then the added tokens with their flags
	ad := p.Tokenizer.Added()
	var got []string
	for _, a := range ad {
		got = append(got, a.Content)
	}
	if !slices.Equal(got, []string{"<unk>", "<s>", "</s>", "d", "cd", "x", "<|im_start|>", "<|im_end|>"}) {
		t.Errorf("added tokens %q", got)
	}
	if ad[3] != (tokenizer.AddedToken{ID: 8, Content: "d", Normalized: true}) || ad[6] != (tokenizer.AddedToken{ID: 11, Content: "<|im_start|>", Special: true}) {
		t.Errorf("added token flags %+v %+v", ad[3], ad[6])
	}
	if !slices.Contains(p.Notes, "padded: 2 tokens at ids >= its vocab_size 10 left out of the union") {
		t.Errorf("notes %q", p.Notes)
	}
	// the tokenizer files say the same
	files, err := p.Tokenizer.Files()
	if err != nil {
		t.Fatal(err)
	}
	again, err := tokenizer.Parse(files[tokenizer.TokenizerFile])
	if err != nil {
		t.Fatal(err)
	}
	for id, tok := range wantTokens {
		if got, _ := again.ID(tok); got != id {
			t.Errorf("written tokenizer: %q at %d, want %d", tok, got, id)
		}
	}
	var cfg struct {
		Decoder map[string]struct {
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens_decoder"`
	}
	json.Unmarshal(files[tokenizer.ConfigFile], &cfg)
	if len(cfg.Decoder) != 8 || cfg.Decoder["12"].Content != "<|im_end|>" || !cfg.Decoder["12"].Special {
		t.Errorf("added_tokens_decoder %+v", cfg.Decoder)
	}
}

func TestBaseAndModelSources(t *testing.T) {
	// the base model's tokenizer loses its entries beyond vocab_size
	p := build(t, Options{Models: load(t, "padded", "base"), Base: 0, Source: Base})
	if len(p.Tokens) != 10 || p.Tokens[9] != "cd" || !slices.Equal(p.Perm[1], []int{0, 1, 2, 3, 4, 5, 6, 7, -1, -1}) {
		t.Errorf("base source: %q %v", p.Tokens, p.Perm)
	}
	if !slices.Contains(p.Notes, "padded: 2 tokenizer entries at ids >= vocab_size 10 left out") {
		t.Errorf("notes %q", p.Notes)
	}
	if d := p.Defaults[8]; d.Kind != Row || d.Model != 0 || d.Row != 8 || d.Why != "only padded has it" {
		t.Errorf("d: %+v", p.Defaults[8])
	}
	// one model's tokenizer, unchanged
	p = build(t, Options{Models: load(t, "base", "chatml"), Base: 0, Source: Model, SourceModel: 1})
	if len(p.Tokens) != 10 || p.Tokens[8] != "<|im_start|>" || p.Perm[0][9] != -1 || p.Perm[1][9] != 9 {
		t.Errorf("model source: %q %v", p.Tokens, p.Perm)
	}
	if !build(t, Options{Models: load(t, "base", "base"), Base: 0, Source: Base}).Same() || p.Same() {
		t.Error("Same")
	}
}

// Without a base model, tokens several models have get their mean.
func TestNoBase(t *testing.T) {
	p := build(t, Options{Models: load(t, "base", "chatml", "padded", "other"), Base: -1, Source: Union})
	if d := p.Defaults[6]; d.Kind != Mean || !slices.Equal(d.Models, []int{0, 1, 2}) {
		t.Errorf("ab: %+v", d)
	}
	if d := p.Defaults[10]; d.Kind != Row || d.Model != 3 {
		t.Errorf("x: %+v", d)
	}
}

func rows(m, r int) ([]float32, error) {
	return []float32{float32(1000 + 100*m + r), float32(1000+100*m+r) + 0.5}, nil
}

func TestOverridesAndFill(t *testing.T) {
	ms := load(t, "base", "chatml", "padded", "other")
	o := Options{Models: ms, Base: 0, Source: Union, PadToMultipleOf: 8, Tokens: []TokenOverride{
		{Token: "<|im_start|>", Source: &EmbedSource{Kind: "model", Model: 1}},
		{Token: "b", Source: &EmbedSource{Kind: "model", Model: 3}, Force: true},
		{Token: "<new>", Source: &EmbedSource{Kind: "zero"}},
		{Token: "e", Source: &EmbedSource{Kind: "model_token", Model: 3, TokenID: -1, Token: "x"}},
		{Token: "c", Force: true},
		{Token: "f", Source: &EmbedSource{Kind: "model_token", Model: 3, TokenID: 2}},
	}}
	p := build(t, o)
	if !slices.Equal(p.Tokens[13:], []string{"<new>", "e", "f"}) || p.VocabSize != 16 {
		t.Fatalf("tokens %q, vocab size %d", p.Tokens, p.VocabSize)
	}
	if !p.Forced[4] || !p.Forced[5] || p.Forced[3] {
		t.Errorf("forced %v", p.Forced)
	}
	// model 3 (other) in the output vocabulary, and model 0 (base)
	for _, tc := range []struct {
		m    int
		want []float32 // first column of each of the 16 rows
	}{
		{3, []float32{1300, 1301, 1302, 1305, 1304, 1005, 1006, 1007, 1208, 1209, 1306, 1108, 1109, 0, 1306, 1302}},
		{0, []float32{1000, 1001, 1002, 1003, 1304, 1005, 1006, 1007, 1208, 1209, 1306, 1108, 1109, 0, 1306, 1302}},
	} {
		dst := make([]float32, 16*2)
		if err := p.Fill(tc.m, 0, 16, 2, dst, rows); err != nil {
			t.Fatal(err)
		}
		pad, err := p.PadRow(tc.m, 2, rows)
		if err != nil {
			t.Fatal(err)
		}
		var mean float64
		for id := 0; id < 16; id++ {
			if id < len(p.Tokens) && dst[2*id] != tc.want[id] {
				t.Errorf("model %d row %d (%q): %v, want %v", tc.m, id, p.Tokens[id], dst[2*id], tc.want[id])
			}
			if id < len(p.Tokens) {
				mean += float64(dst[2*id]) / float64(len(p.Tokens))
				second := dst[2*id] + 0.5
				if tc.want[id] == 0 { // a zero row
					second = 0
				}
				if dst[2*id+1] != second {
					t.Errorf("model %d row %d: %v", tc.m, id, dst[2*id:2*id+2])
				}
			}
		}
		if math.Abs(float64(pad[0])-mean) > 1e-3 || math.Abs(float64(pad[1]-pad[0])-0.5*float64(len(p.Tokens)-1)/float64(len(p.Tokens))) > 1e-3 {
			t.Errorf("model %d pad row %v, mean %v", tc.m, pad, mean)
		}
		// a range of rows gives the same rows
		part := make([]float32, 3*2)
		p.Fill(tc.m, 4, 7, 2, part, rows)
		if !slices.Equal(part, dst[8:14]) {
			t.Errorf("rows 4-6: %v, want %v", part, dst[8:14])
		}
	}
	// the mean of several models' rows
	p = build(t, Options{Models: ms, Base: -1, Source: Union})
	dst := make([]float32, len(p.Tokens)*2)
	p.Fill(3, 0, len(p.Tokens), 2, dst, rows)
	if dst[12] != 1106 || dst[13] != 1106.5 { // ab: mean of models 0, 1, 2's row 6
		t.Errorf("mean row %v", dst[12:14])
	}
	for _, bad := range []struct {
		tok  TokenOverride
		want string
	}{
		{TokenOverride{Token: "ab", Source: &EmbedSource{Kind: "model", Model: 3}}, "configured source other does not have it"},
		{TokenOverride{Token: "g", Source: &EmbedSource{Kind: "model_token", Model: 3, TokenID: -1, Token: "zz"}}, `"zz" is not in other's vocabulary`},
		{TokenOverride{Token: "g", Source: &EmbedSource{Kind: "model_token", Model: 3, TokenID: 7}}, "row 7 is out of range for other (vocab_size 7)"},
		{TokenOverride{Token: "g", Source: &EmbedSource{Kind: "model", Model: 9}}, "not part of the merge"},
	} {
		_, err := Build(Options{Models: ms, Base: 0, Source: Union, Tokens: []TokenOverride{bad.tok}})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v", bad.tok, err)
		}
	}
}

// A token configured under tokens: that the vocabulary has keeps its flags.
func TestOverrideKeepsSpecialFlags(t *testing.T) {
	p := build(t, Options{Models: load(t, "chatml", "base"), Base: 0, Source: Base,
		Tokens: []TokenOverride{{Token: "<|im_end|>", Source: &EmbedSource{Kind: "zero"}}}})
	for _, a := range p.Tokenizer.Added() {
		if a.Content == "<|im_end|>" && (!a.Special || a.ID != 9) {
			t.Errorf("%+v", a)
		}
	}
}

func TestCompare(t *testing.T) {
	ms := load(t, "base", "other", "chatml")
	d := Compare(ms[0], ms[1])
	if d.SizeA != 8 || d.SizeB != 7 || !slices.Equal(d.OnlyA, []string{"ab", "bc"}) || !slices.Equal(d.OnlyB, []string{"x"}) || d.Moved != 2 || d.Same() {
		t.Errorf("%+v", d)
	}
	msg := d.Describe("base", "other")
	for _, w := range []string{"base has 8 embedding rows and other 7", `2 tokens only in base ("ab", "bc")`, `1 tokens only in other ("x")`, "2 tokens at different ids", "tokenizer_source: union"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q: %s", w, msg)
		}
	}
	if !Compare(ms[0], ms[0]).Same() {
		t.Error("a model differs from itself")
	}
}

func TestChatTemplates(t *testing.T) {
	ms := load(t, "base", "chatml", "padded", "other")
	toks := []*tokenizer.Tokenizer{ms[0].Tokenizer, ms[1].Tokenizer, ms[2].Tokenizer, ms[3].Tokenizer}
	baseT, _ := ms[0].Tokenizer.ChatTemplate()
	chatT, _ := ms[1].Tokenizer.ChatTemplate()
	// base and padded share one template, chatml and other another: a tie, won by the first seen
	if s, ok, err := ResolveChatTemplate("auto", toks); err != nil || !ok || s != strings.TrimSpace(baseT) {
		t.Errorf("auto: %q %v %v", s, ok, err)
	}
	if s, _, _ := ResolveChatTemplate("auto", []*tokenizer.Tokenizer{toks[1], toks[0], toks[2], toks[3]}); s != strings.TrimSpace(chatT) {
		t.Errorf("auto, chatml first: %q", s)
	}
	if s, _, _ := ResolveChatTemplate("auto", []*tokenizer.Tokenizer{toks[0], toks[1], toks[3]}); s != strings.TrimSpace(chatT) {
		t.Errorf("auto, plurality: %q", s)
	}
	if _, ok, _ := ResolveChatTemplate("auto", nil); ok {
		t.Error("auto without templates")
	}
	if s, ok, _ := ResolveChatTemplate("chatml", nil); !ok || !strings.Contains(s, "<|im_start|>") {
		t.Error("chatml")
	}
	lit := "{% for m in messages %}{{ m.content }}{% endfor %}"
	if s, _, _ := ResolveChatTemplate(lit, nil); s != lit {
		t.Error("literal")
	}
	for _, bad := range []string{"chatml2", "short {{ x }}", "a long string without any brace at all"} {
		if _, _, err := ResolveChatTemplate(bad, nil); err == nil || !strings.Contains(err.Error(), "alpaca, chatml, exaone, llama3, mistral") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// The built-in templates render the published prompt formats (with the
// Jinja settings transformers uses).
func TestBuiltinTemplatesRender(t *testing.T) {
	py := testenv.PythonWith(t, "jinja2")
	want := map[string]string{
		"chatml":  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
		"llama3":  "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
		"mistral": "<s> [INST] Be brief.\n\nHi [/INST] Hello</s> [INST] Bye [/INST]",
		"alpaca":  "Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello\n\n### Instruction:\nBye\n\n### Response:\n",
		"exaone":  "[|system|]Be brief.[|endofturn|]\n[|user|]Hi\n[|assistant|]Hello[|endofturn|]\n[|user|]Bye\n[|assistant|]",
	}
	templates := map[string]string{}
	for _, n := range ChatTemplateNames() {
		templates[n], _ = BuiltinChatTemplate(n)
	}
	in, _ := json.Marshal(templates)
	script := `
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
def raise_exception(m): raise ValueError(m)
env.globals["raise_exception"] = raise_exception
msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
out = {n: env.from_string(t).render(messages=msgs, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
       for n, t in json.load(sys.stdin).items()}
print(json.dumps(out))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	b, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("templates %v", ChatTemplateNames())
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s renders\n%q\nwant\n%q", n, got[n], w)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	ms := load(t, "base", "other")
	if _, err := Build(Options{Models: []Input{{Name: "x"}, ms[1]}, Base: 0, Source: Union}); err == nil || !strings.Contains(err.Error(), "base model x has no tokenizer.json") {
		t.Errorf("%v", err)
	}
	if _, err := Build(Options{Models: []Input{ms[0], {Name: "y"}}, Base: 0, Source: Model, SourceModel: 1}); err == nil || !strings.Contains(err.Error(), "tokenizer source y") {
		t.Errorf("%v", err)
	}
	// a model without a tokenizer is taken to have the base model's vocabulary
	p := build(t, Options{Models: []Input{ms[0], {Name: "noTok", VocabSize: 8}}, Base: 0, Source: Union})
	if !slices.Equal(p.Perm[1], p.Perm[0]) || !strings.Contains(strings.Join(p.Notes, "\n"), "noTok has no tokenizer") {
		t.Errorf("%v %q", p.Perm, p.Notes)
	}
}
