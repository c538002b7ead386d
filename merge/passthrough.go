package merge

import (
	"context"
)

// passthrough: the one model's tensor, times an optional scale (mergekit's
// passthrough; with slices: it stacks layers of models into a
// frankenmerge).
type passthroughMethod struct{ about }

func init() {
	Register(passthroughMethod{about{name: "passthrough", doc: "copy the one model's tensors, optionally scaled (with slices: stack layers of models)"}})
}

func (passthroughMethod) Params() []Param {
	return []Param{{Name: "scale", Kind: Number, Scope: PerModel, Varies: true, Default: Num(1),
		Doc: "passthrough: multiply the tensor by this (default 1: an exact copy)"}}
}

func (passthroughMethod) Check(p *Plan) error {
	return needModels(p, 1, 1)
}

func (passthroughMethod) Start(context.Context, *Job) (Merger, error) {
	return passthroughMerger{}, nil
}

type passthroughMerger struct{}

// Tensor is the affine kernel scale * x: bytes are copied exactly at scale
// 1 into the same dtype.
func (passthroughMerger) Tensor(_ context.Context, t *TensorJob) (*Kernel, error) {
	return &Kernel{Inputs: t.Models[:1], Coef: []float64{t.ModelNum(0, "scale")}}, nil
}
