package merge

import (
	"context"
	"fmt"
	"math"
)

// ram and ramplus-tl: Reinforced Agent Merging as mergekit computes it.
// An entry of task vector d_i = x_i - base counts when |d_i| > epsilon;
// an entry that only one model changes is added whole, one that several
// change is averaged over them: base + sum_i d_i * (count == 1 ? lambda_i
// : 1 / count). ram has lambda_i = 1; ramplus-tl (tensor-local) scales a
// model's unique entries by lambda_i = 1 + r clamp(shared_i / max(unique_i,
// epsilon), 0, alpha), from its counts of shared and unique entries in the
// tensor (one more pass).
type ramMethod struct {
	about
	plus bool
}

func init() {
	Register(ramMethod{about: about{name: "ram", doc: "RAM: add entries one model changes, average those several change"}})
	Register(ramMethod{about: about{name: "ramplus-tl", doc: "RAM+ (tensor-local): RAM with each model's unique entries rescaled by its shared/unique ratio"}, plus: true})
}

func (m ramMethod) Params() []Param {
	ps := []Param{{Name: "epsilon", Kind: Number, Varies: true, Default: Num(1e-5), Check: AtLeast(0),
		Doc: "ram: |task vector entry| above which a model changes the entry (default 1e-5)"}}
	if m.plus {
		ps = append(ps,
			Param{Name: "r", Kind: Number, Varies: true, Default: Num(0.1), Doc: "ramplus-tl: rescaling strength of unique entries (default 0.1)"},
			Param{Name: "alpha", Kind: Number, Varies: true, Default: Num(0.2), Doc: "ramplus-tl: bound of the shared/unique ratio (default 0.2)"})
	}
	return ps
}

func (m ramMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("%s merges task vectors: give the base model (--base, or base_model in the config)", m.name)
	}
	return nil
}

func (m ramMethod) Start(context.Context, *Job) (Merger, error) { return ramMerger{plus: m.plus}, nil }

type ramMerger struct{ plus bool }

// Tensor: ram is elementwise; ramplus-tl first counts each model's shared
// and unique entries (one pass, 2 numbers per model).
func (m ramMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	xs := t.others()
	n := len(xs)
	ins := append(append([]*Input{}, xs...), t.Base)
	eps := t.Num("epsilon")
	lam := make([]float64, n)
	for i := range lam {
		lam[i] = 1
	}
	if m.plus && n > 0 {
		counts, err := t.Sums(ctx, ins, 2*n, func(_ int, in [][]float64, acc []float64) error {
			b := in[n]
			for k, bk := range b {
				c := 0
				for i := range n {
					if math.Abs(in[i][k]-bk) > eps {
						c++
					}
				}
				for i := range n {
					if math.Abs(in[i][k]-bk) > eps {
						if c > 1 {
							acc[2*i]++
						} else {
							acc[2*i+1]++
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		r, alpha := t.Num("r"), t.Num("alpha")
		for i := range lam {
			rho := counts[2*i] / max(counts[2*i+1], eps)
			lam[i] = 1 + r*max(0, min(alpha, rho))
		}
	}
	return &Kernel{Inputs: ins, Fn: func(_ int, in [][]float64, out []float64) {
		b := in[n]
		for k, bk := range b[:len(out)] {
			c := 0
			for i := range n {
				if math.Abs(in[i][k]-bk) > eps {
					c++
				}
			}
			v := bk
			for i := range n {
				d := in[i][k] - bk
				if math.Abs(d) <= eps {
					continue
				}
				if c == 1 {
					v += d * lam[i]
				} else {
					v += d / float64(c)
				}
			}
			out[k] = v
		}
	}}, nil
}
