package merge

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/io/checkpoint"
)

// fisher: Fisher-weighted averaging (Matena & Raffel, 2022):
// sum_i F_i x_i / sum_i F_i elementwise, F_i model i's diagonal Fisher.
type fisherMethod struct{ about }

func init() {
	Register(fisherMethod{about{name: "fisher", aliases: []string{"fisher-merging", "fisher-weighted"},
		doc: "Fisher-weighted average"}})
}

func (fisherMethod) Params() []Param {
	return []Param{weightParam(),
		{Name: "fisher", Kind: Path, Scope: PerModel, Required: true,
			Doc: "fisher: one Fisher file per model, comma-separated, in model order"}}
}

func (fisherMethod) Check(p *Plan) error { return needModels(p, 2, 0) }

// Start opens and checks each model's Fisher file.
func (fisherMethod) Start(_ context.Context, j *Job) (Merger, error) {
	f := &fisherMerger{}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	for i, m := range j.Models {
		path := j.Plan.ModelValue(i, "fisher").Text
		ff, err := fisher.Open(path) // format, version, dtypes
		if err != nil {
			return nil, err
		}
		err = ff.CheckAgainst(m)
		ff.Close()
		if err != nil {
			return nil, err
		}
		raw, err := checkpoint.OpenFormat(path, fisher.Format, fisher.Version, "Fisher")
		if err != nil {
			return nil, err
		}
		f.files = append(f.files, raw)
	}
	ok = true
	return f, nil
}

type fisherMerger struct{ files []*checkpoint.Model }

func (f *fisherMerger) Close() error {
	for _, m := range f.files {
		m.Close()
	}
	return nil
}

// Tensor: one pass over the Fisher values (checked finite and non-negative)
// for their mean, which sets the floor 1e-6 mean below which a Fisher value
// does not count (so entries where every Fisher is about zero get the plain
// weighted average, never 0/0); then sum_i f_i x_i / sum_i f_i with
// f_i = w_i (max(F_i, floor) + 1e-30). A tensor without Fisher values (a
// frozen or integer one) gets the weighted average. Memory: one float64
// per 4096 elements.
func (f *fisherMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	ws := t.weights(allModels(len(t.Models)))
	var fs []*Input
	for _, m := range f.files {
		if !m.Has(t.Name) {
			ws, scale, err := linearScale(ws, true)
			if err != nil {
				return nil, err
			}
			return &Kernel{Inputs: t.Models, Fn: linearFn(ws, scale)}, nil
		}
		x, err := m.Tensor(t.Name)
		if err != nil {
			return nil, err
		}
		info, _ := m.Info(t.Name)
		in := &Input{File: info.File, Tensor: t.Name, DType: x.DType, Shape: x.Shape, Data: x.Data, model: m}
		if in.NumElements() != t.N {
			return nil, fmt.Errorf("%s: %d Fisher values for %d weights", info.File, in.NumElements(), t.N)
		}
		fs = append(fs, in)
	}
	sums, err := t.Sums(ctx, fs, 1, func(lo int, in [][]float64, acc []float64) error {
		var s float64
		for i, v := range in {
			for k, x := range v {
				if !(x >= 0) {
					return fmt.Errorf("%s: tensor %q: Fisher value %g at element %d (must be finite and non-negative)", fs[i].FileName(), t.Name, x, lo+k)
				}
				s += x
			}
		}
		acc[0] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	mean := sums[0] / float64(t.N*len(fs))
	floor := 1e-6 * mean
	n := len(t.Models)
	ins := append(append([]*Input{}, t.Models...), fs...)
	return &Kernel{Inputs: ins, Fn: func(_ int, in [][]float64, out []float64) {
		for k := range out {
			var num, den float64
			for i := range n {
				fi := ws[i] * (max(in[n+i][k], floor) + 1e-30)
				num += fi * in[i][k]
				den += fi
			}
			out[k] = num / den
		}
	}}, nil
}
