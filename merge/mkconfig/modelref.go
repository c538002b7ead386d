package mkconfig

import (
	"fmt"
	"strings"
)

// ModelPath is a model location: a local path or a Hugging Face Hub id, with
// an optional revision (written path@revision).
type ModelPath struct {
	Path     string
	Revision string
}

func (p ModelPath) String() string {
	if p.Revision == "" {
		return p.Path
	}
	return p.Path + "@" + p.Revision
}

// ModelRef is mergekit's model reference: a model, optionally a PEFT LoRA
// adapter to merge into it first ("model+lora"), and optionally an
// architecture name that overrides the model's config.json.
type ModelRef struct {
	Model                ModelPath
	LoRA                 *ModelPath
	OverrideArchitecture string
	Line                 int
}

// String writes the reference as mergekit does: "path[@rev][+lora[@rev]]".
func (r ModelRef) String() string {
	if r.LoRA != nil {
		return r.Model.String() + "+" + r.LoRA.String()
	}
	return r.Model.String()
}

// Equal reports whether two references name the same model, adapter and
// architecture (lines are ignored).
func (r ModelRef) Equal(o ModelRef) bool {
	if r.Model != o.Model || r.OverrideArchitecture != o.OverrideArchitecture || (r.LoRA == nil) != (o.LoRA == nil) {
		return false
	}
	return r.LoRA == nil || *r.LoRA == *o.LoRA
}

// ParseModelRef parses mergekit's string form of a model reference:
// "path", "path@revision", "path+lora", "path@rev+lora@rev". As in mergekit,
// "+" separates the adapter and "@" the revision, wherever they appear.
func ParseModelRef(s string) (ModelRef, error) {
	chunks := strings.Split(s, "+")
	if len(chunks) > 2 {
		return ModelRef{}, fmt.Errorf("model reference %q: more than one + (model+lora)", s)
	}
	m, err := parseModelPath(chunks[0])
	if err != nil {
		return ModelRef{}, fmt.Errorf("model reference %q: %w", s, err)
	}
	r := ModelRef{Model: m}
	if len(chunks) == 2 {
		l, err := parseModelPath(chunks[1])
		if err != nil {
			return ModelRef{}, fmt.Errorf("model reference %q: LoRA: %w", s, err)
		}
		r.LoRA = &l
	}
	return r, nil
}

func parseModelPath(s string) (ModelPath, error) {
	if strings.Count(s, "@") > 1 {
		return ModelPath{}, fmt.Errorf("more than one @ in %q", s)
	}
	path, rev, _ := strings.Cut(s, "@")
	if path == "" {
		return ModelPath{}, fmt.Errorf("empty path in %q", s)
	}
	if strings.Contains(s, "@") && rev == "" {
		return ModelPath{}, fmt.Errorf("empty revision in %q", s)
	}
	return ModelPath{Path: path, Revision: rev}, nil
}
