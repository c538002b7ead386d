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
// of the adapter must be a Linear, Conv1D or Embedding of the model. As PEFT
// loads them, a lora_B.bias (lora_bias) adds scaling * lora_B.bias to the
// module's bias, and the tensors of modules_to_save replace the model's.

// loraSource is a model's LoRA adapter, by the tensor it changes.
type loraSource struct {
	dir      string
	adapter  *peft.Adapter
	byTensor map[string]loraModule
	// bias: the biases a lora_B.bias changes; saved: the tensors
	// modules_to_save replace, by the model's tensor name
	bias  map[string]loraModule
	saved map[string]*tensors.Tensor
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
		if f.Bias != nil {
			b := mod.Param("bias")
			if b == nil {
				// lora_bias gives every LoRA layer a lora_B.bias: zeros
				// change nothing; anything else has no bias to go to
				v, err := f.Bias.Float32()
				if err != nil {
					return nil, fmt.Errorf("LoRA adapter %s: module %s: lora_B.bias: %w", dir, name, err)
				}
				if slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
					return nil, fmt.Errorf("LoRA adapter %s: module %s has a non-zero lora_B.bias but no bias in %s", dir, name, m.Path)
				}
				continue
			}
			if len(b.Shape) != 1 || b.Shape[0] != f.Bias.Shape[0] {
				return nil, fmt.Errorf("LoRA adapter %s: module %s: lora_B.bias %v does not fit its bias %v", dir, name, f.Bias.Shape, b.Shape)
			}
			if ls.bias == nil {
				ls.bias = map[string]loraModule{}
			}
			ls.bias[b.Tensor] = ls.byTensor[w.Tensor]
		}
	}
	// modules_to_save: by the module's PEFT path and the parameter's name
	for _, mod := range a.Modules {
		for _, p := range mod.Params {
			x, ok := ad.Saved[a.PEFTModule(mod.Name)+"."+p.Name]
			if !ok || p.Name == "" {
				continue
			}
			if !slices.Equal(x.Shape, p.Shape) {
				return nil, fmt.Errorf("LoRA adapter %s: modules_to_save tensor %q is %v, %s's %q is %v", dir, x.Name, x.Shape, m.Path, p.Tensor, p.Shape)
			}
			if _, adapted := ls.byTensor[p.Tensor]; adapted {
				return nil, fmt.Errorf("LoRA adapter %s: tensor %q is both saved and adapted", dir, p.Tensor)
			}
			if ls.saved == nil {
				ls.saved = map[string]*tensors.Tensor{}
			}
			ls.saved[p.Tensor] = x
			matched["saved:"+a.PEFTModule(mod.Name)+"."+p.Name] = true
		}
	}
	// a head tied to a saved embedding has its copy (ensure_weight_tying);
	// the model's head is the embedding's tensor, or a copy the frameworks
	// ignore
	for _, t := range a.Ties {
		matched["saved:"+a.PEFTModule(t.Module)+".weight"] = true
	}
	for n := range ad.Saved {
		if !matched["saved:"+n] {
			return nil, fmt.Errorf("LoRA adapter %s: modules_to_save tensor %q is not a tensor of %s", dir, peft.SavedKey(n), m.Path)
		}
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

// loraSavedInput returns a tensor of the adapter's modules_to_save in
// place of the model's.
func (j *Job) loraSavedInput(m *checkpoint.Model, ls *loraSource, x *tensors.Tensor, name string) (*Input, error) {
	if !x.DType.IsFloat() {
		return nil, fmt.Errorf("LoRA adapter %s: tensor %q is %s: only floating tensors are merged", ls.dir, x.Name, x.DType)
	}
	return &Input{File: ls.dir, Tensor: name, DType: x.DType, Shape: x.Shape, Data: x.Data, allowNonFinite: j.Plan.AllowNonFinite}, nil
}

// loraBiasInput returns a module's bias plus scaling * lora_B.bias, as
// float32 in memory.
func (j *Job) loraBiasInput(m *checkpoint.Model, ls *loraSource, lm loraModule, name string) (*Input, error) {
	x, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	defer m.Release(name)
	info, _ := m.Info(name)
	v := make([]float64, len(x.Data)/(x.DType.Bits()/8))
	if err := safetensors.Guard(info.File, name, func() error { return tensors.DecodeFloat64(v, x.Data, x.DType) }); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, err)
	}
	d, err := lm.factors.Bias.Float32()
	if err != nil {
		return nil, err
	}
	if len(d) != len(v) {
		return nil, fmt.Errorf("LoRA adapter %s: lora_B.bias of %s has %d values, %q %d", ls.dir, lm.factors.Name, len(d), name, len(v))
	}
	data := make([]byte, 4*len(v))
	for i := range v {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(v[i]+lm.scaling*float64(d[i]))))
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
