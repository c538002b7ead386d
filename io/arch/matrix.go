package arch

import (
	"fmt"
	"strings"

	"github.com/wtool/wtool/tensors"
)

// Transposed reports whether the module stores its weight as [in, out]
// (Conv1D, Embedding) rather than in its own orientation [out, in].
func (m *Module) Transposed() bool { return m.Kind == Conv1D || m.Kind == Embedding }

// MatrixShape returns the size of the module's weight as a matrix in the
// module's own orientation: rows = output features, cols = input features
// (a convolution: in*prod(kernel)).
func (m *Module) MatrixShape() (rows, cols int) { return m.OutFeatures, m.InFeatures }

// ToMatrix returns values stored in the layout of the module's weight (the
// weight itself, its Fisher information, a gradient) as the row-major
// [out, in] matrix of the module's own orientation. It returns the slice
// itself when no transposition is needed, a new slice otherwise.
func ToMatrix[T float32 | float64](m *Module, stored []T) ([]T, error) {
	rows, cols := m.MatrixShape()
	if len(stored) != rows*cols {
		return nil, fmt.Errorf("module %q: %d values for a %d x %d weight", m.Name, len(stored), rows, cols)
	}
	if !m.Transposed() {
		return stored, nil
	}
	return transpose(stored, cols, rows), nil
}

// FromMatrix is the inverse of ToMatrix: a row-major [out, in] matrix back
// in the layout the module stores its weight in.
func FromMatrix[T float32 | float64](m *Module, mat []T) ([]T, error) {
	rows, cols := m.MatrixShape()
	if len(mat) != rows*cols {
		return nil, fmt.Errorf("module %q: %d values for a %d x %d matrix", m.Name, len(mat), rows, cols)
	}
	if !m.Transposed() {
		return mat, nil
	}
	return transpose(mat, rows, cols), nil
}

// transpose returns the transpose of a row-major r x c matrix.
func transpose[T float32 | float64](a []T, r, c int) []T {
	out := make([]T, len(a))
	const blk = 64
	for i0 := 0; i0 < r; i0 += blk {
		for j0 := 0; j0 < c; j0 += blk {
			for i := i0; i < min(i0+blk, r); i++ {
				for j := j0; j < min(j0+blk, c); j++ {
					out[j*r+i] = a[i*c+j]
				}
			}
		}
	}
	return out
}

// Matrix decodes a module's weight tensor (or a tensor of the same layout)
// as a float32 matrix in the module's own orientation [out, in].
func (m *Module) Matrix(t *tensors.Tensor) ([]float32, int, int, error) {
	return moduleMatrix(m, t, t.Float32)
}

// MatrixFloat64 is Matrix with float64 values.
func (m *Module) MatrixFloat64(t *tensors.Tensor) ([]float64, int, int, error) {
	return moduleMatrix(m, t, t.Float64)
}

// moduleMatrix is Matrix with the values decode gives (t's, decoded).
func moduleMatrix[T float32 | float64](m *Module, t *tensors.Tensor, decode func() ([]T, error)) ([]T, int, int, error) {
	v, err := decode()
	if err != nil {
		return nil, 0, 0, err
	}
	if err := m.checkShape(t); err != nil {
		return nil, 0, 0, err
	}
	mat, err := ToMatrix(m, v)
	rows, cols := m.MatrixShape()
	return mat, rows, cols, err
}

func (m *Module) checkShape(t *tensors.Tensor) error {
	w := m.Weight()
	if w == nil || !m.IsMatrix() {
		return fmt.Errorf("module %q (%s) has no weight matrix", m.Name, m.Kind)
	}
	if fmt.Sprint(w.Shape) != fmt.Sprint(t.Shape) {
		return fmt.Errorf("tensor %q has shape %v, module %q's weight %v", t.Name, t.Shape, m.Name, w.Shape)
	}
	return nil
}

// DefaultTargets returns the modules that low-rank compression, spectra and
// adapters act on unless told otherwise: every Linear, Conv1D and
// convolution weight except embeddings (token, position, token-type, patch)
// and class tokens, output heads and MoE routers, in name order.
func (a *Arch) DefaultTargets() []*Module {
	var out []*Module
	for _, m := range a.Modules {
		if IsDefaultTarget(m) {
			out = append(out, m)
		}
	}
	return out
}

// IsDefaultTarget reports whether the module is one of DefaultTargets.
func IsDefaultTarget(m *Module) bool {
	if m.Kind != Linear && m.Kind != Conv1D && m.Kind != Conv {
		return false
	}
	switch m.Role {
	case RoleEmbedding, RolePositionEmbedding, RoleTokenTypeEmbedding, RolePatchEmbedding, RoleHead, RoleRouter, RoleClassToken, RoleBuffer:
		return false
	}
	return m.Weight() != nil
}

// TiedModules returns the modules that share a weight with m: the modules
// tied to it and the one it is tied to.
func (a *Arch) TiedModules(m *Module) []string {
	var out []string
	for _, t := range a.Ties {
		if t.To == m.Name {
			out = append(out, t.Module)
		}
		if t.Module == m.Name {
			out = append(out, t.To)
		}
	}
	return out
}

// PEFTModule returns the path PEFT uses for a module of the checkpoint: the
// module's path in the model class config.json names (architectures), which
// includes the base model's attribute (Prefix) when the checkpoint's names
// do not (GPT-2's h.0.attn.c_attn is transformer.h.0.attn.c_attn in
// GPT2LMHeadModel), and excludes it for a bare base model class.
func (a *Arch) PEFTModule(module string) string {
	if a.Prefix == "" || a.Architecture == "" {
		return module
	}
	p := a.Prefix + "."
	has := strings.HasPrefix(module, p)
	switch {
	case a.baseClass && has:
		return strings.TrimPrefix(module, p)
	case !a.baseClass && !has && !a.outsideBase(module):
		return p + module
	}
	return module
}

// outsideBase reports whether a module belongs to the model class's head
// rather than its base model (lm_head, classifier, cls.*), whose names never
// take the prefix.
func (a *Arch) outsideBase(module string) bool {
	if m, ok := a.byModule[module]; ok && m.Role == RoleHead {
		return true
	}
	return headName.MatchString(module)
}

// TaskType returns PEFT's task_type for the model class (CAUSAL_LM for
// *ForCausalLM and *LMHeadModel, SEQ_CLS, TOKEN_CLS, QUESTION_ANS,
// FEATURE_EXTRACTION for a bare base model), or "" when PEFT has none for it
// (masked LM, image classification) or the class is unknown.
func (a *Arch) TaskType() string {
	c := a.Architecture
	switch {
	case c == "":
		return ""
	case strings.HasSuffix(c, "ForCausalLM") || strings.HasSuffix(c, "LMHeadModel"):
		return "CAUSAL_LM"
	case strings.HasSuffix(c, "ForSequenceClassification"):
		return "SEQ_CLS"
	case strings.HasSuffix(c, "ForTokenClassification"):
		return "TOKEN_CLS"
	case strings.HasSuffix(c, "ForQuestionAnswering"):
		return "QUESTION_ANS"
	case strings.HasSuffix(c, "ForSeq2SeqLM"):
		return "SEQ_2_SEQ_LM"
	case a.baseClass:
		return "FEATURE_EXTRACTION"
	}
	return ""
}
