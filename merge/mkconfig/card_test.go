package mkconfig

import (
	"strings"
	"testing"
)

func TestCard(t *testing.T) {
	c := mustParse(t, `models:
  - model: org/a
    parameters: {weight: 1, density: 0.5}
  - model: ./local/b+org/lora
    parameters: {weight: 1, density: 0.5}
merge_method: ties
base_model: mistralai/Mistral-7B-v0.1
`)
	exists := func(p string) bool { return p == "./local/b" }
	got := string(Card(c, CardOptions{Name: "my-merge", Exists: exists}))
	want := "---\nbase_model:\n- mistralai/Mistral-7B-v0.1\n- org/a\n- org/lora\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n- wtool\n---\n" +
		"# my-merge\n\nThis is a merge of pre-trained language models made with [wtool](https://github.com/wtool/wtool) from a [mergekit](https://github.com/arcee-ai/mergekit) configuration.\n\n" +
		"## Merge Details\n### Merge Method\n\n" +
		"This model was merged using the [TIES](https://arxiv.org/abs/2306.01708) merge method using [mistralai/Mistral-7B-v0.1](https://huggingface.co/mistralai/Mistral-7B-v0.1) as a base.\n\n" +
		"### Models Merged\n\nThe following models were included in the merge:\n* [org/a](https://huggingface.co/org/a)\n* ./local/b + [org/lora](https://huggingface.co/org/lora)\n\n" +
		"### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n" + string(c.Source) + "```\n"
	if got != want {
		t.Errorf("card:\n%s\nwant:\n%s", got, want)
	}
	// slerp names no base: both ends are listed
	c = mustParse(t, "models: [{model: /abs/a}, {model: org/b}]\nmerge_method: slerp\nbase_model: /abs/a\nparameters: {t: 0.5}\n")
	got = string(Card(c, CardOptions{Exists: func(string) bool { return false }}))
	for _, w := range []string{"# Untitled Model (1)\n", "using the [SLERP](https://en.wikipedia.org/wiki/Slerp) merge method.\n", "* /abs/a\n* [org/b](https://huggingface.co/org/b)\n", "base_model:\n- org/b\n"} {
		if !strings.Contains(got, w) {
			t.Errorf("slerp card lacks %q:\n%s", w, got)
		}
	}
	c = mustParse(t, "models: [{model: /abs/a}]\nmerge_method: passthrough\n")
	if got := string(Card(c, CardOptions{Exists: func(string) bool { return false }})); !strings.Contains(got, "base_model: []\n") || !strings.Contains(got, "using the Passthrough merge method.\n") {
		t.Errorf("no hub model:\n%s", got)
	}
}

func TestIsHubID(t *testing.T) {
	no := func(string) bool { return false }
	for p, want := range map[string]bool{"org/m": true, "gpt2": true, "/abs/m": false, "~/m": false, "a/b/c": false, "./m": false} {
		if got := IsHubID(p, no); got != want {
			t.Errorf("%s: %v", p, got)
		}
	}
	if IsHubID("org/m", func(string) bool { return true }) {
		t.Error("an existing local path is not a Hub id")
	}
}
