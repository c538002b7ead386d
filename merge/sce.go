package merge

import (
	"context"
	"fmt"
	"math"
)

// sce: SCE (Wan et al., 2024) as mergekit computes it. Task vectors
// T_i = x_i - base; with select_topk < 1 only the entries whose variance
// across the task vectors is among the int(select_topk * nonzero) largest
// are kept (nonzero: entries of non-zero variance; an exact streaming
// selection); each model's weight is its kept task vector's mean square,
// normalized to sum 1 (1/N each when they sum to less than 1e-6); signs
// are elected by the sum of the kept task vectors and the agreeing entries
// averaged by weight: base + sum_agree w_i T_i / max(sum_agree w_i, 1e-6).
type sceMethod struct{ about }

func init() {
	Register(sceMethod{about{name: "sce", doc: "SCE: select entries by variance across task vectors, weight models by energy, elect signs"}})
}

func (sceMethod) Params() []Param {
	return []Param{
		{Name: "select_topk", Kind: Number, Default: Num(1), Check: InRange(0, 1, false, false),
			Doc: "sce: fraction of the entries (by variance across the task vectors) kept (default 1)"},
		{Name: "int8_mask", Kind: Bool, Hidden: true, Doc: "mergekit's memory option; no effect on the result"},
	}
}

func (sceMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("sce merges task vectors: give the base model (--base, or base_model in the config)")
	}
	return nil
}

func (sceMethod) Start(context.Context, *Job) (Merger, error) { return sceMerger{}, nil }

type sceMerger struct{}

// sceVariance is the population variance of the task vectors' entry k.
func sceVariance(in [][]float64, b []float64, k int) float64 {
	n := len(in)
	var m float64
	for i := range n {
		m += in[i][k] - b[k]
	}
	m /= float64(n)
	var v float64
	for i := range n {
		d := in[i][k] - b[k] - m
		v += d * d
	}
	return v / float64(n)
}

// Tensor: with select_topk < 1, a pass counting the non-zero variances and
// an exact top-k selection of the variances (select.go); a pass for the
// weights; then an elementwise kernel. Memory: the selection's.
func (sceMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	xs := t.others()
	n := len(xs)
	if n == 0 {
		return &Kernel{Inputs: []*Input{t.Base}, Coef: []float64{1}}, nil
	}
	ins := append(append([]*Input{}, xs...), t.Base)
	topk := t.Job.Plan.Float("select_topk")
	thr := keepAll
	if topk < 1 {
		nz, err := t.Sums(ctx, ins, 1, func(_ int, in [][]float64, acc []float64) error {
			for k := range in[n] {
				if sceVariance(in[:n], in[n], k) != 0 {
					acc[0]++
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		k := int(nz[0] * topk)
		if k <= 0 {
			thr = keepNone
		} else {
			sel := newSelection(k, t.N)
			key := func(_ int, in [][]float64, keys []uint64) {
				for e := range keys {
					keys[e] = math.Float64bits(sceVariance(in[:n], in[n], e))
				}
			}
			uses := make([]int, n+1)
			for i := range uses {
				uses[i] = i
			}
			if err := selectTop(ctx, t, ins, [][]int{uses}, []*selection{sel}, []func(int, [][]float64, []uint64){key}); err != nil {
				return nil, err
			}
			thr = sel.res
		}
	}
	kept := func(in [][]float64, k, e int) bool {
		return thr == keepAll || thr.Keep(math.Float64bits(sceVariance(in[:n], in[n], k)), e)
	}
	sq, err := t.Sums(ctx, ins, n, func(lo int, in [][]float64, acc []float64) error {
		b := in[n]
		for k := range b {
			if !kept(in, k, lo+k) {
				continue
			}
			for i := range n {
				d := in[i][k] - b[k]
				acc[i] += d * d
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	w := make([]float64, n)
	var sw float64
	for i := range w {
		w[i] = sq[i] / float64(t.N)
		sw += w[i]
	}
	for i := range w {
		if math.Abs(sw) < 1e-6 {
			w[i] = 1 / float64(n)
		} else {
			w[i] /= sw
		}
	}
	return &Kernel{Inputs: ins, Fn: func(lo int, in [][]float64, out []float64) {
		b := in[n]
		for k := range out {
			if !kept(in, k, lo+k) {
				out[k] = b[k]
				continue
			}
			var sum float64
			for i := range n {
				sum += in[i][k] - b[k]
			}
			var num, den float64
			for i := range n {
				if d := in[i][k] - b[k]; d > 0 && sum >= 0 || d < 0 && sum < 0 {
					num += d * w[i]
					den += w[i]
				}
			}
			out[k] = b[k] + num/max(den, 1e-6)
		}
	}}, nil
}
