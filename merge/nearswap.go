package merge

import (
	"context"
	"fmt"
	"math"
)

// nearswap: mergekit's NearSwap: where the base and the other model are
// close the other model's value is taken, elsewhere the base's kept:
// w = clamp(t / max(|base - x|, 1e-6), 0, 1), result w x + (1 - w) base.
type nearswapMethod struct{ about }

func init() {
	Register(nearswapMethod{about{name: "nearswap", doc: "NearSwap: take the other model's entries where they are within t of the base"}})
}

func (nearswapMethod) Params() []Param {
	return []Param{{Name: "t", Kind: Number, Varies: true, Required: true, Check: AtLeast(0),
		Doc: "nearswap: similarity threshold; w = clamp(t / |base - x|, 0, 1)"}}
}

func (nearswapMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("nearswap needs the base model (--base, or base_model in the config)")
	}
	if n := nonBase(p); n != 1 {
		return fmt.Errorf("nearswap merges the base and exactly one other model, got %d others", n)
	}
	return nil
}

func (nearswapMethod) Start(context.Context, *Job) (Merger, error) { return nearswapMerger{}, nil }

type nearswapMerger struct{}

// Tensor: elementwise; memory: the kernel's blocks.
func (nearswapMerger) Tensor(_ context.Context, t *TensorJob) (*Kernel, error) {
	tt := t.Num("t")
	return &Kernel{Inputs: []*Input{t.others()[0], t.Base}, Fn: func(_ int, in [][]float64, out []float64) {
		x, a := in[0], in[1]
		for k := range out {
			w := max(0, min(1, tt/max(math.Abs(a[k]-x[k]), 1e-6)))
			out[k] = w*x[k] + (1-w)*a[k]
		}
	}}, nil
}
