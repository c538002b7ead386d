package mkconfig

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/wtool/wtool/io/hub"
)

// CardOptions are the inputs of Card besides the configuration.
type CardOptions struct {
	// Name is the model's name, the heading (mergekit: the output
	// directory's base name); "" gives "Untitled Model (1)" as mergekit.
	Name string
	// ConfigYAML is the configuration text shown in the card (default:
	// c.ConfigFile()).
	ConfigYAML []byte
	// Exists reports whether a path exists locally (default os.Stat); a
	// model path that exists locally is not linked to the Hub.
	Exists func(path string) bool
}

// IsHubID reports whether a model path names a Hugging Face Hub repository
// rather than a local path, as mergekit's model card decides it but
// without asking the Hub: not starting with "/" or "~", at most one "/",
// not existing locally, and a valid repository id.
func IsHubID(path string, exists func(string) bool) bool {
	if path == "" || strings.ContainsAny(path[:1], "/~") || strings.Count(path, "/") > 1 {
		return false
	}
	if exists(path) {
		return false
	}
	return hub.IsRepoID(path)
}

// Card returns the README.md model card mergekit writes beside a merged
// model: YAML front matter (base_model: the Hub models merged, tags,
// library_name), the method with a link, the base model, the models merged
// and the configuration.
func Card(c *Config, o CardOptions) []byte {
	if o.Exists == nil {
		o.Exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	if o.ConfigYAML == nil {
		o.ConfigYAML = c.ConfigFile()
	}
	name := o.Name
	if name == "" {
		name = "Untitled Model (1)"
	}
	link := func(p string) string {
		if IsHubID(p, o.Exists) {
			return fmt.Sprintf("[%s](https://huggingface.co/%s)", p, p)
		}
		return p
	}
	refMD := func(r ModelRef) string {
		s := link(r.Model.Path)
		if r.LoRA != nil {
			s += " + " + link(r.LoRA.Path)
		}
		return s
	}
	var hubBases []string
	for _, r := range c.ReferencedModels() {
		if IsHubID(r.Model.Path, o.Exists) {
			hubBases = append(hubBases, r.Model.Path)
		}
		if r.LoRA != nil && IsHubID(r.LoRA.Path, o.Exists) {
			hubBases = append(hubBases, r.LoRA.Path)
		}
	}
	// mergekit names no base for slerp: its base model is one of the two ends
	actualBase := c.BaseModel
	if c.MergeMethod == "slerp" {
		actualBase = nil
	}
	method := c.MergeMethod
	if m, ok := Methods[c.MergeMethod]; ok {
		method = m.Pretty
		if m.URL != "" {
			method = fmt.Sprintf("[%s](%s)", m.Pretty, m.URL)
		}
	}
	var b bytes.Buffer
	b.WriteString("---\n")
	if len(hubBases) == 0 {
		b.WriteString("base_model: []\n")
	} else {
		b.WriteString("base_model:\n")
		for _, h := range hubBases {
			fmt.Fprintf(&b, "- %s\n", quote(h))
		}
	}
	b.WriteString("library_name: transformers\ntags:\n- mergekit\n- merge\n- wtool\n---\n")
	fmt.Fprintf(&b, "# %s\n\n", name)
	b.WriteString("This is a merge of pre-trained language models made with [wtool](https://github.com/wtool/wtool) from a [mergekit](https://github.com/arcee-ai/mergekit) configuration.\n\n")
	b.WriteString("## Merge Details\n### Merge Method\n\n")
	fmt.Fprintf(&b, "This model was merged using the %s merge method", method)
	if actualBase != nil {
		fmt.Fprintf(&b, " using %s as a base", refMD(*actualBase))
	}
	b.WriteString(".\n\n### Models Merged\n\nThe following models were included in the merge:\n")
	for _, r := range c.ReferencedModels() {
		if actualBase != nil && r.Equal(*actualBase) {
			continue
		}
		fmt.Fprintf(&b, "* %s\n", refMD(r))
	}
	b.WriteString("\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n")
	b.Write(bytes.TrimRight(o.ConfigYAML, "\n"))
	b.WriteString("\n```\n")
	return b.Bytes()
}
