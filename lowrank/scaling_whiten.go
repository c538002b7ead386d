package lowrank

import (
	"fmt"

	"github.com/wtool/wtool/io/checkpoint"
)

// whiten: data whitening (SVD-LLM): the weight times the Cholesky factor of
// the input Gram matrix, factorised, unscaled.
type whitenScaling struct{}

func init() { registerScaling(whitenScaling{}, 3) }

func (whitenScaling) Name() string                                       { return "whiten" }
func (whitenScaling) Check(o CompressOptions, _ *checkpoint.Model) error { return needStats(o) }
func (whitenScaling) CheckTarget(o CompressOptions, t *target) error     { return checkModuleStats(o, t) }

func (whitenScaling) Factor(w []float32, t *target, o CompressOptions) (*Factorization, string, error) {
	s, err := o.Stats.Module(t.module)
	if err != nil {
		return nil, "", err
	}
	if s.Dim != t.n {
		return nil, "", fmt.Errorf("statistics of module %q have %d input features, the weight has %d", t.module, s.Dim, t.n)
	}
	f, shift, err := Whiten(w, t.m, t.n, s.Gram, t.rule, o.SVD)
	note := ""
	if shift > 0 {
		note = fmt.Sprintf("Gram not positive definite: diagonal shift %.3g", shift)
	}
	return f, note, err
}
