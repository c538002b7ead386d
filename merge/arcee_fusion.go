package merge

import (
	"context"
	"fmt"
	"math"
)

// arcee-fusion: mergekit's Arcee Fusion: each entry's importance is
// |x - base| times the KL divergence between the softmax of its row in x
// and in the base (rows along the last axis; a 1-D tensor is one row;
// KL = sum (p + 1e-8) log((p + 1e-8) / (q + 1e-8))); entries whose importance
// reaches median + 1.5 IQR are taken from x, the others from the base. The
// quantiles are exact (the sorted importance at int(q (n - 1)), q in
// float32 as in torch): three streaming selections; mergekit's
// torch.quantile interpolates (docs/mergekit.md).
type arceeFusionMethod struct{ about }

func init() {
	Register(arceeFusionMethod{about{name: "arcee-fusion", doc: "Arcee Fusion: take the other model's entries whose importance (|delta| x row KL) is an outlier"}})
}

func (arceeFusionMethod) Params() []Param { return nil }

func (arceeFusionMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("arcee-fusion needs the base model (--base, or base_model in the config)")
	}
	if n := nonBase(p); n != 1 {
		return fmt.Errorf("arcee-fusion merges the base and exactly one other model, got %d others", n)
	}
	return nil
}

func (arceeFusionMethod) Start(context.Context, *Job) (Merger, error) {
	return arceeFusionMerger{}, nil
}

type arceeFusionMerger struct{}

// softmaxKL is the smoothed KL divergence of softmax(x) from softmax(b).
func softmaxKL(x, b []float64) float64 {
	mx, mb := math.Inf(-1), math.Inf(-1)
	for k := range x {
		mx, mb = max(mx, x[k]), max(mb, b[k])
	}
	var sx, sb float64
	for k := range x {
		sx += math.Exp(x[k] - mx)
		sb += math.Exp(b[k] - mb)
	}
	var kl float64
	for k := range x {
		p := math.Exp(x[k]-mx)/sx + 1e-8
		q := math.Exp(b[k]-mb)/sb + 1e-8
		kl += p * math.Log(p/q)
	}
	return kl
}

// Tensor: a pass over rows for the divergences (one number a row kept),
// three exact selections for the quartiles, then an elementwise kernel.
func (arceeFusionMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	ins := []*Input{t.others()[0], t.Base}
	kl, err := t.RowSums(ctx, ins, 1, func(_ int, in [][]float64, acc []float64) {
		acc[0] = max(softmaxKL(in[0], in[1]), 0)
	})
	if err != nil {
		return nil, err
	}
	m := rowLen(t)
	imp := func(x, b float64, e int) float64 { return math.Abs(x-b) * kl[e/m] }
	n := t.N
	var sels []*selection
	var fns []func(int, [][]float64, []uint64)
	for _, q := range []float32{0.25, 0.5, 0.75} {
		qi := int(q * float32(n-1)) // the qi-th smallest (0-based) is the (n-qi)-th largest
		sels = append(sels, newSelection(n-qi, n))
		fns = append(fns, func(lo int, in [][]float64, keys []uint64) {
			for e := range keys {
				keys[e] = math.Float64bits(imp(in[0][e], in[1][e], lo+e))
			}
		})
	}
	if err := selectTop(ctx, t, ins, [][]int{{0, 1}, {0, 1}, {0, 1}}, sels, fns); err != nil {
		return nil, err
	}
	// a selection of all n (qi = 0, tiny tensors) says "keep all" without
	// its smallest key: the minimum comes from one more pass
	lowest := math.Inf(1)
	if sels[0].k >= n {
		mins, err := t.Blocks(ctx, ins, 1, func(lo int, in [][]float64, acc []float64) error {
			acc[0] = math.Inf(1)
			for e := range in[0] {
				acc[0] = min(acc[0], imp(in[0][e], in[1][e], lo+e))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, v := range mins {
			lowest = min(lowest, v)
		}
	}
	q := func(s *selection) float64 {
		if s.k >= n {
			return lowest
		}
		return math.Float64frombits(s.res.Key)
	}
	q1, q2, q3 := q(sels[0]), q(sels[1]), q(sels[2])
	thr := q2 + 1.5*(q3-q1)
	return &Kernel{Inputs: ins, Fn: func(lo int, in [][]float64, out []float64) {
		x, b := in[0], in[1]
		for k := range out {
			if imp(x[k], b[k], lo+k) >= thr {
				out[k] = x[k]
			} else {
				out[k] = b[k]
			}
		}
	}}, nil
}
