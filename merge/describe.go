package merge

import (
	"context"
	"maps"
	"slices"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Description is a plan resolved against its models without merging
// anything: what every output tensor is computed from, with the
// parameters at that tensor (wtool merge --dry-run).
type Description struct {
	Method string `json:"method"`
	// Models are the plan's models (a sliced plan: every model its slices
	// read), Base its base model.
	Models []string `json:"models"`
	Base   string   `json:"base,omitempty"`
	DType  string   `json:"dtype,omitempty"`
	// Params are the global parameters that do not vary by tensor (flags,
	// integers, words, files), default or given.
	Params map[string]any `json:"params,omitempty"`
	// NumLayers is the number of layers the output has.
	NumLayers int `json:"num_layers"`
	// VocabSize is the output vocabulary's size when the merge builds one
	// that changes the embeddings (0 otherwise).
	VocabSize int                 `json:"vocab_size,omitempty"`
	Tensors   []TensorDescription `json:"tensors"`
}

// TensorDescription is one output tensor of a described plan.
type TensorDescription struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	// Copy is set for tensors copied unchanged (integers, tensors only in
	// the base): from Inputs[0].
	Copy bool `json:"copy,omitempty"`
	// Depth is the relative depth t gradients are evaluated at.
	Depth  float64       `json:"depth"`
	Inputs []TensorInput `json:"inputs"`
	// Base is the index in Inputs of the base model's tensor (-1: none).
	Base int `json:"base"`
	// Params are the method's number parameters at this tensor: a global
	// one as a number, a per-model one as one number per input.
	Params map[string]any `json:"params,omitempty"`
}

// TensorInput is a tensor of an input model.
type TensorInput struct {
	Model  string `json:"model"`
	Tensor string `json:"tensor"`
	// LoRA is the adapter merged into the model's tensor first (its
	// factors, its lora_B.bias, or its modules_to_save copy).
	LoRA string `json:"lora,omitempty"`
	// Vocab: the rows are permuted into the output vocabulary first.
	Vocab bool `json:"vocab,omitempty"`
}

// Describe resolves a plan against its models (opened, never read beyond
// their headers) and says what every output tensor is merged from. It
// does not run the method's preparation (weight matching, statistics).
func Describe(ctx context.Context, p *Plan) (*Description, error) {
	m, err := p.validate()
	if err != nil {
		return nil, err
	}
	d := &Description{Method: m.Name(), Base: p.Base, DType: p.DType, Params: map[string]any{}}
	for _, mi := range p.Models {
		d.Models = append(d.Models, mi.Path)
	}
	for _, prm := range m.Params() {
		if prm.Kind == Number || prm.Scope != Global {
			continue
		}
		v := p.Global(prm.Name)
		switch prm.Kind {
		case Bool:
			d.Params[prm.Name] = v.Bool
		case Int:
			d.Params[prm.Name] = v.Int
		case List:
			d.Params[prm.Name] = v.List
		default:
			d.Params[prm.Name] = v.Text
		}
	}
	describe := func(j *Job, e safetensors.Entry, t *TensorJob) TensorDescription {
		td := TensorDescription{Name: e.Name, DType: e.DType.String(), Shape: e.Shape, Depth: t.Depth, Base: -1, Params: map[string]any{}}
		input := func(m *checkpoint.Model, path string, in *Input) TensorInput {
			ti := TensorInput{Model: path, Tensor: in.Tensor, Vocab: j.vocab != nil && j.vocab.remap[e.Name]}
			if ls, ok := j.loras[m]; ok {
				_, f := ls.byTensor[in.Tensor]
				_, b := ls.bias[in.Tensor]
				_, s := ls.saved[in.Tensor]
				if f || b || s {
					ti.LoRA = ls.dir
				}
			}
			return ti
		}
		for i, in := range t.Models {
			td.Inputs = append(td.Inputs, input(j.Models[i], j.Plan.Models[i].Path, in))
			if in == t.Base {
				td.Base = i
			}
		}
		if t.Base != nil && td.Base < 0 {
			td.Inputs = append(td.Inputs, input(j.Base, j.Plan.Base, t.Base))
			td.Base = len(td.Inputs) - 1
		}
		for _, name := range slices.Sorted(maps.Keys(j.Plan.schema)) {
			prm := j.Plan.schema[name]
			if prm.Kind != Number {
				continue
			}
			if prm.Scope == Global {
				td.Params[name] = t.Num(name)
				continue
			}
			vs := make([]float64, len(t.Models))
			for i := range vs {
				vs[i] = t.ModelNum(i, name)
			}
			td.Params[name] = vs
		}
		return td
	}
	copied := func(e safetensors.Entry, model, tensor string) TensorDescription {
		return TensorDescription{Name: e.Name, DType: e.DType.String(), Shape: e.Shape, Copy: true, Base: -1, Inputs: []TensorInput{{Model: model, Tensor: tensor}}}
	}
	if len(p.Slices) > 0 {
		d.NumLayers = p.NumLayers()
		var jobs []*Job
		defer func() {
			for _, j := range jobs {
				j.close()
			}
		}()
		for i := range p.Slices {
			sp := p.slicePlan(i)
			if _, err := sp.validate(); err != nil {
				return nil, err
			}
			j, err := openJob(sp, m, checkpoint.WriteOptions{})
			if err != nil {
				return nil, err
			}
			j.dry = true
			jobs = append(jobs, j)
		}
		layout, err := sliceLayout(p, jobs)
		if err != nil {
			return nil, err
		}
		for _, st := range layout {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			j := jobs[st.slice]
			if !st.e.DType.IsFloat() {
				d.Tensors = append(d.Tensors, copied(st.e, j.Plan.Models[0].Path, p.sourceName(st, 0)))
				continue
			}
			t, err := p.sliceTensorJob(j, st)
			if err != nil {
				return nil, err
			}
			d.Tensors = append(d.Tensors, describe(j, st.e, t))
		}
		return d, nil
	}
	j, err := openJob(p, m, checkpoint.WriteOptions{})
	if err != nil {
		return nil, err
	}
	defer j.close()
	j.dry = true
	d.NumLayers = j.NumLayers
	if j.vocab != nil && j.vocab.size > 0 {
		d.VocabSize = j.vocab.size
	}
	first := j.Models[0]
	for _, e := range j.entries() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		info, inModels := first.Info(e.Name)
		n, _ := tensors.NumElements(e.Shape)
		switch {
		case !inModels:
			d.Tensors = append(d.Tensors, copied(e, p.Base, e.Name))
			continue
		case !info.DType.IsFloat() || n == 0:
			d.Tensors = append(d.Tensors, copied(e, p.Models[0].Path, e.Name))
			continue
		}
		t, err := j.tensorJob(e)
		if err != nil {
			return nil, err
		}
		d.Tensors = append(d.Tensors, describe(j, e, t))
	}
	return d, nil
}
