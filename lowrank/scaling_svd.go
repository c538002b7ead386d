package lowrank

import "github.com/wtool/wtool/io/checkpoint"

// svd: the plain truncated SVD of each weight (no scaling).
type svdScaling struct{}

func init() { registerScaling(svdScaling{}, 0) }

func (svdScaling) Name() string                                   { return "svd" }
func (svdScaling) Check(CompressOptions, *checkpoint.Model) error { return nil }
func (svdScaling) CheckTarget(CompressOptions, *target) error     { return nil }
func (svdScaling) Factor(w []float32, t *target, o CompressOptions) (*Factorization, string, error) {
	f, err := SVDFactorize(w, t.m, t.n, t.rule, o.SVD)
	return f, "", err
}
