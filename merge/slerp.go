package merge

import (
	"context"
	"fmt"
)

// slerp: spherical interpolation of two models (mergekit's slerp), each
// tensor treated as one vector.
type slerpMethod struct{ about }

func init() {
	Register(slerpMethod{about{name: "slerp", doc: "spherical interpolation of two models"}})
}

func (slerpMethod) Params() []Param {
	return []Param{{Name: "t", Kind: Number, Varies: true, Required: true,
		Doc: "slerp: interpolation position, 0 gives the first model (or --base), 1 the other"}}
}

func (slerpMethod) Check(p *Plan) error {
	if err := needModels(p, 2, 2); err != nil {
		return err
	}
	if p.Base != "" && p.Base != p.Models[0].Path && p.Base != p.Models[1].Path {
		return fmt.Errorf("slerp's base model must be one of the two models")
	}
	return nil
}

func (slerpMethod) Start(context.Context, *Job) (Merger, error) { return slerpMerger{}, nil }

type slerpMerger struct{}

// Tensor: one pass for the norms and the dot product (float64 sums, block
// by block), then the interpolation; memory: one float64 per 4096 elements
// and per sum.
func (slerpMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	a, b := t.Models[0], t.Models[1]
	if t.Job.BaseIndex == 1 {
		a, b = b, a
	}
	return slerpKernel(ctx, t, a, b, t.Num("t"))
}
