package merge

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// A model given with a LoRA adapter (ModelInput.LoRA, mergekit's
// "model+lora") is merged as W + scaling B A: each adapted weight is
// computed in float32, in the module's own orientation (io/arch: a Linear's
// [out, in], a Conv1D's transposed, an Embedding's [dim, num]), when its
// tensor is merged, and held in memory for that tensor only. Every module
// of the adapter must be a Linear, Conv1D or Embedding of the model.

// loraSource is a model's LoRA adapter, by the tensor it changes.
type loraSource struct {
	dir      string
	adapter  *peft.Adapter
	byTensor map[string]loraModule
}

type loraModule struct {
	mod     *arch.Module
	factors *peft.Module
	scaling float64
}

// openLoRA reads an adapter and matches its modules to the model's.
func openLoRA(m *checkpoint.Model, dir string) (*loraSource, error) {
	ad, err := peft.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("LoRA adapter %s: %w", dir, err)
	}
	a, err := arch.Open(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	ls := &loraSource{dir: dir, adapter: ad, byTensor: map[string]loraModule{}}
	matched := map[string]bool{}
	for _, mod := range a.Modules {
		name := a.PEFTModule(mod.Name)
		f, ok := ad.Modules[name]
		if !ok {
			continue
		}
		w := mod.Weight()
		switch {
		case w == nil || (mod.Kind != arch.Linear && mod.Kind != arch.Conv1D && mod.Kind != arch.Embedding):
			return nil, fmt.Errorf("LoRA adapter %s: module %s of %s is a %s: only Linear, Conv1D and Embedding adapters are merged", dir, name, m.Path, mod.Kind)
		case f.Embedding != (mod.Kind == arch.Embedding):
			return nil, fmt.Errorf("LoRA adapter %s: module %s's factors do not fit its kind (%s)", dir, name, mod.Kind)
		}
		rows, cols := mod.MatrixShape()
		r := f.Rank()
		if len(f.A.Shape) != 2 || len(f.B.Shape) != 2 || f.A.Shape[1] != int64(cols) || f.B.Shape[0] != int64(rows) || f.B.Shape[1] != int64(r) {
			return nil, fmt.Errorf("LoRA adapter %s: module %s: factors %v and %v do not fit its [%d, %d] weight", dir, name, f.A.Shape, f.B.Shape, rows, cols)
		}
		ls.byTensor[w.Tensor] = loraModule{mod: mod, factors: f, scaling: ad.Config.Scaling(name)}
		matched[name] = true
	}
	var missing []string
	for _, n := range ad.Names() {
		if !matched[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("LoRA adapter %s: %d module(s) are not modules of %s: %s", dir, len(missing), m.Path, strings.Join(missing[:min(len(missing), 5)], ", "))
	}
	return ls, nil
}

// loraInput returns a model's tensor with its adapter merged in, as
// float32 in memory.
func (j *Job) loraInput(m *checkpoint.Model, ls *loraSource, lm loraModule, name string) (*Input, error) {
	x, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	info, _ := m.Info(name)
	var w []float32
	var rows, cols int
	err = safetensors.Guard(info.File, name, func() error {
		var err error
		w, rows, cols, err = lm.mod.Matrix(x)
		if err == nil {
			w = slices.Clone(w)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
	}
	a, err := lm.factors.A.Float32()
	if err != nil {
		return nil, err
	}
	b, err := lm.factors.B.Float32()
	if err != nil {
		return nil, err
	}
	r := lm.factors.Rank()
	s := lm.scaling
	acc := make([]float64, cols)
	for i := range rows {
		clear(acc)
		for k := range r {
			bik := s * float64(b[i*r+k])
			if bik == 0 {
				continue
			}
			ak := a[k*cols : (k+1)*cols]
			for c, v := range ak {
				acc[c] += bik * float64(v)
			}
		}
		row := w[i*cols : (i+1)*cols]
		for c := range row {
			row[c] = float32(float64(row[c]) + acc[c])
		}
	}
	stored, err := arch.FromMatrix(lm.mod, w)
	if err != nil {
		return nil, err
	}
	data := make([]byte, 4*len(stored))
	for i, v := range stored {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return &Input{File: m.Path + " + LoRA " + ls.dir, Tensor: name, DType: tensors.F32, Shape: x.Shape, Data: data, allowNonFinite: j.Plan.AllowNonFinite}, nil
}

// openLoRAs reads the adapters of the job's models and base.
func (j *Job) openLoRAs(models []*checkpoint.Model, loras []string) error {
	for i, dir := range loras {
		if dir == "" {
			continue
		}
		ls, err := openLoRA(models[i], dir)
		if err != nil {
			return err
		}
		if j.loras == nil {
			j.loras = map[*checkpoint.Model]*loraSource{}
		}
		j.loras[models[i]] = ls
	}
	return nil
}
