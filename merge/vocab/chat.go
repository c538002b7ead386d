package vocab

import (
	"embed"
	"fmt"
	"sort"
	"strings"

	"github.com/wtool/wtool/io/tokenizer"
)

//go:embed chat_templates/*.jinja
var templates embed.FS

// ChatTemplateNames lists the built-in chat templates: alpaca, chatml,
// exaone, llama3, mistral (mergekit's names).
func ChatTemplateNames() []string {
	ents, _ := templates.ReadDir("chat_templates")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".jinja"))
	}
	sort.Strings(out)
	return out
}

// BuiltinChatTemplate returns a built-in template by name. wtool's
// templates are its own renditions of these formats (mergekit's files are
// not copied): they render the published prompt formats exactly, where
// mergekit's alpaca, exaone and llama3 files render stray whitespace
// under transformers' Jinja settings.
func BuiltinChatTemplate(name string) (string, bool) {
	b, err := templates.ReadFile("chat_templates/" + name + ".jinja")
	if err != nil {
		return "", false
	}
	return string(b), true
}

// ResolveChatTemplate turns a chat_template: value into a template, as
// mergekit does: "auto" takes the template most of the models' tokenizers
// have (compared without surrounding whitespace; the first one seen wins a
// tie; ok is false when none has one); a built-in name gives that
// template; anything else is the template itself, and must look like one
// (at least 20 characters with a "{"). "" gives ok false.
func ResolveChatTemplate(spec string, toks []*tokenizer.Tokenizer) (template string, ok bool, err error) {
	switch {
	case spec == "":
		return "", false, nil
	case spec == "auto":
		count := map[string]int{}
		var order []string
		for _, t := range toks {
			if t == nil {
				continue
			}
			s, has := t.ChatTemplate()
			s = strings.TrimSpace(s)
			if !has || s == "" {
				continue
			}
			if count[s] == 0 {
				order = append(order, s)
			}
			count[s]++
		}
		best := ""
		for _, s := range order {
			if count[s] > count[best] {
				best = s
			}
		}
		return best, best != "", nil
	}
	if t, ok := BuiltinChatTemplate(spec); ok {
		return t, true, nil
	}
	if len(spec) < 20 || !strings.Contains(spec, "{") {
		return "", false, fmt.Errorf("invalid chat_template %q: not auto, not a built-in name (%s), and not a Jinja template", spec, strings.Join(ChatTemplateNames(), ", "))
	}
	return spec, true, nil
}
