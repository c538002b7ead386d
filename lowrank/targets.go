package lowrank

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// target is one module whose weight an operation factorises. Its matrix is
// the weight in the module's own orientation [out, in] (m x n), whatever
// order the checkpoint stores it in (arch.ToMatrix).
type target struct {
	mod          *arch.Module
	name, module string  // weight tensor, module
	shape        []int64 // the weight as stored
	m, n         int     // the matrix: out x in
	rule         RankRule
	fixedRank    int  // 0 for energy rules
	dense        bool // known in advance to be left dense (no saving)
	skip         bool // left untouched: the rank does not fit the matrix (reported)
	note         string
	hasBias      bool
	dtype        tensors.DType // of the weight
	biasDType    tensors.DType
}

// targetSelection says which modules an operation may act on.
type targetSelection struct {
	patterns  []*regexp.Regexp // explicit --target patterns (tensor names); none: the defaults
	rule      RankRule
	overrides []Override
	// allowed reports whether the operation handles the module's kind; an
	// explicit target of another kind is an error naming it.
	allowed func(*arch.Module) bool
	what    string // "factorise", "adapt": for messages
}

// findTargets selects the target modules of m: the modules whose weight an
// explicit pattern matches, or the architecture's default targets (every
// Linear, Conv1D and convolution except embeddings, heads and routers). A
// rank that does not fit a matrix leaves it untouched and reported, never
// aborts the run.
func findTargets(m *checkpoint.Model, a *arch.Arch, sel targetSelection) ([]*target, error) {
	explicit := len(sel.patterns) > 0
	var mods []*arch.Module
	if explicit {
		matched := make([]int, len(sel.patterns))
		seen := map[string]bool{}
		for _, name := range m.Names() {
			info, _ := m.Info(name)
			p, ok := a.Param(name)
			isWeight := ok && p.Name == "weight" && p.Module.IsMatrix() && info.DType.IsFloat()
			for i, re := range sel.patterns {
				if !re.MatchString(name) || !isWeight {
					continue
				}
				matched[i]++
				if !seen[p.Module.Name] {
					seen[p.Module.Name] = true
					mods = append(mods, p.Module)
				}
			}
		}
		for i, c := range matched {
			if c == 0 {
				return nil, fmt.Errorf("--target %q matches no weight matrix (Linear, Conv1D, convolution or embedding) in %s", sel.patterns[i], m.Path)
			}
		}
		for _, mod := range mods {
			if sel.allowed != nil && !sel.allowed(mod) {
				return nil, fmt.Errorf("tensor %q: cannot %s a %s (%s)", mod.Weight().Tensor, sel.what, mod.Kind, mod.Role)
			}
		}
	} else {
		for _, mod := range a.DefaultTargets() {
			if info, _ := m.Info(mod.Weight().Tensor); info.DType.IsFloat() && (sel.allowed == nil || sel.allowed(mod)) {
				mods = append(mods, mod)
			}
		}
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("%s: no weight matrix to %s (family %s; choose modules with --target)", m.Path, sel.what, a.Family)
	}
	var out []*target
	for _, mod := range mods {
		w := mod.Weight()
		info, _ := m.Info(w.Tensor)
		rows, cols := mod.MatrixShape()
		t := &target{mod: mod, name: w.Tensor, module: mod.Name, shape: info.Shape, m: rows, n: cols, rule: sel.rule, dtype: info.DType}
		for _, ov := range sel.overrides {
			if ov.Pattern.MatchString(w.Tensor) {
				t.rule = ov.Rule
				break
			}
		}
		k, fixed, err := t.rule.Fixed(rows, cols)
		switch {
		case err != nil:
			t.skip = true
			t.note = fmt.Sprintf("left as is: %v", err)
		case fixed:
			t.fixedRank = k
			t.dense = !SavesParameters(rows, cols, k)
		}
		if b := mod.Bias(); b != nil {
			bi, _ := m.Info(b.Tensor)
			t.hasBias, t.biasDType = true, bi.DType
		}
		t.note = joinNotes(t.note, tieNote(a, mod))
		out = append(out, t)
	}
	return out, nil
}

// tieNote says what changing a tied module's weight means.
func tieNote(a *arch.Arch, mod *arch.Module) string {
	var notes []string
	if mod.TiedTo != "" {
		notes = append(notes, fmt.Sprintf("tied to %s (tie_word_embeddings): loaders use that weight for both, so a change here is lost unless config.json sets tie_word_embeddings false", mod.TiedTo))
	}
	for _, t := range a.Ties {
		if t.To == mod.Name {
			notes = append(notes, fmt.Sprintf("%s is tied to it (tie_word_embeddings): the head shares this weight", t.Module))
		}
	}
	return strings.Join(notes, "; ")
}

func joinNotes(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// openArch returns the given architecture or describes the model.
func openArch(m *checkpoint.Model, a *arch.Arch) (*arch.Arch, error) {
	if a != nil {
		return a, nil
	}
	return arch.Open(m)
}

// readMatrix decodes a target's weight as its matrix in the module's own
// orientation [out, in], reading the mapped bytes under safetensors.Guard,
// and hands the pages back.
func readMatrix(m *checkpoint.Model, t *target) ([]float32, error) {
	x, err := m.Tensor(t.name)
	if err != nil {
		return nil, err
	}
	defer m.Release(t.name)
	info, _ := m.Info(t.name)
	var w []float32
	err = safetensors.Guard(info.File, t.name, func() error {
		var err error
		w, _, _, err = t.mod.Matrix(x)
		return err
	})
	return w, err
}
