package lowrank

import (
	"fmt"

	"github.com/wtool/wtool/io/checkpoint"
)

// asvd: activation-aware SVD: input columns scaled by the mean absolute
// activation to the power CompressOptions.Alpha, factorised, unscaled.
type asvdScaling struct{}

func init() { registerScaling(asvdScaling{}, 2) }

func (asvdScaling) Name() string                                       { return "asvd" }
func (asvdScaling) Check(o CompressOptions, _ *checkpoint.Model) error { return needStats(o) }
func (asvdScaling) CheckTarget(o CompressOptions, t *target) error     { return checkModuleStats(o, t) }

func (asvdScaling) Factor(w []float32, t *target, o CompressOptions) (*Factorization, string, error) {
	s, err := o.Stats.Module(t.module)
	if err != nil {
		return nil, "", err
	}
	if s.Dim != t.n {
		return nil, "", fmt.Errorf("statistics of module %q have %d input features, the weight has %d", t.module, s.Dim, t.n)
	}
	f, err := ASVD(w, t.m, t.n, s.MeanAbs(), o.Alpha, t.rule, o.SVD)
	return f, "", err
}
