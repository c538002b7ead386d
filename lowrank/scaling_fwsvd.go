package lowrank

import (
	"fmt"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// fwsvd: Fisher-weighted SVD: rows or columns scaled by the square root of
// their summed Fisher information (CompressOptions.PerRow), factorised,
// unscaled.
type fwsvdScaling struct{}

func init() { registerScaling(fwsvdScaling{}, 1) }

func (fwsvdScaling) Name() string { return "fwsvd" }

func (fwsvdScaling) Check(o CompressOptions, m *checkpoint.Model) error {
	if o.Fisher == nil {
		return fmt.Errorf("fwsvd needs a Fisher file (--fisher)")
	}
	return o.Fisher.CheckAgainst(m)
}

func (fwsvdScaling) CheckTarget(o CompressOptions, t *target) error {
	if !o.Fisher.Has(t.name) {
		return fmt.Errorf("%s: no Fisher information for %q", o.Fisher.Path, t.name)
	}
	return nil
}

func (fwsvdScaling) Factor(w []float32, t *target, o CompressOptions) (*Factorization, string, error) {
	fv, err := o.Fisher.Get(t.name)
	if err != nil {
		return nil, "", err
	}
	if fv, err = arch.ToMatrix(t.mod, fv); err != nil { // the weight's orientation
		return nil, "", err
	}
	var imp []float64
	if o.PerRow {
		imp = fisher.PerOutput(fv, t.m, t.n)
	} else {
		imp = fisher.PerInput(fv, t.m, t.n)
	}
	f, err := FWSVD(w, t.m, t.n, imp, o.PerRow, t.rule, o.SVD)
	return f, "", err
}
