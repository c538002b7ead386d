package merge

import (
	"context"
	"fmt"
)

// linear: the weighted average of the models (mergekit's linear).
type linearMethod struct{ about }

func init() {
	Register(linearMethod{about{name: "linear", doc: "weighted average of the models"}})
}

func (linearMethod) Params() []Param {
	return []Param{weightParam(), normalizeParam(true)}
}

func (linearMethod) Check(p *Plan) error {
	if ws, ok := constantWeights(p); ok {
		if _, _, err := linearScale(ws, p.Global("normalize").Bool); err != nil {
			return err
		}
	}
	return nil
}

func (linearMethod) Start(_ context.Context, j *Job) (Merger, error) {
	return linearMerger{normalize: j.Plan.Global("normalize").Bool}, nil
}

type linearMerger struct{ normalize bool }

// Tensor is an affine combination: the fused kernel on the inputs' bytes.
// Memory: a few 8k-element buffers per goroutine.
func (l linearMerger) Tensor(_ context.Context, t *TensorJob) (*Kernel, error) {
	ws, scale, err := linearScale(t.weights(allModels(len(t.Models))), l.normalize)
	if err != nil {
		return nil, fmt.Errorf("linear: %w", err)
	}
	k := &Kernel{}
	for i, w := range ws {
		if c := w * scale; c != 0 {
			k.Inputs = append(k.Inputs, t.Models[i])
			k.Coef = append(k.Coef, c)
		}
	}
	if k.Coef == nil { // every weight zero (unnormalized): zeros
		k.Inputs, k.Coef = t.Models[:1], []float64{0}
	}
	return k, nil
}
