package merge

import "fmt"

// Parameters shared by several methods.

const (
	densityDoc = "fraction of task-vector entries kept (ties: the largest, in [0, 1]; dare-*: at random, in (0, 1]): one value or one per model"
	seedDoc    = "seed of DARE's random masks and of weight matching's group order (default 0)"
)

func weightParam() Param {
	return Param{Name: "weight", Flag: "weights", Kind: Number, Scope: PerModel, Varies: true, Default: Num(1),
		Doc: "per-model weights: one value, or one per model, comma-separated (default 1)"}
}

func normalizeParam(def bool) Param {
	return Param{Name: "normalize", Kind: Bool, Default: Flag(def),
		Doc: "divide by the sum of the weights (default: on for linear, ties and wm)"}
}

func lambdaParam() Param {
	return Param{Name: "lambda", Kind: Number, Varies: true, Default: Num(1),
		Doc: "scale of the merged task vector (default 1)"}
}

func densityParam(check func(float64) error, doc string) Param {
	return Param{Name: "density", Kind: Number, Scope: PerModel, Varies: true, Default: Num(1), Check: check, Doc: doc}
}

func seedParam(doc string) Param {
	return Param{Name: "seed", Kind: Int, Default: IntValue(0), Check: AtLeast(0), Doc: doc}
}

// weights returns the per-model weights of a tensor for the models in idx.
func (t *TensorJob) weights(idx []int) []float64 {
	ws := make([]float64, len(idx))
	for k, i := range idx {
		ws[k] = t.ModelNum(i, "weight")
	}
	return ws
}

// allModels returns 0..n-1.
func allModels(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// constantWeights returns the plan's per-model weights when none varies
// with the tensor.
func constantWeights(p *Plan) ([]float64, bool) {
	var ws []float64
	for i := range p.Models {
		w, ok := p.ModelValue(i, "weight").Num.Constant()
		if !ok {
			return nil, false
		}
		ws = append(ws, w)
	}
	return ws, true
}

// needModels checks the number of models.
func needModels(p *Plan, lo, hi int) error {
	n := len(p.Models)
	switch {
	case lo == hi && n != lo:
		return fmt.Errorf("%s merges exactly %d models, got %d", p.Method, lo, n)
	case n < lo:
		return fmt.Errorf("%s needs at least %d models, got %d", p.Method, lo, n)
	case hi > 0 && n > hi:
		return fmt.Errorf("%s merges at most %d models, got %d", p.Method, hi, n)
	}
	return nil
}
