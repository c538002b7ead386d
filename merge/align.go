package merge

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/permute"
)

// Alignment before merging (Plan.Align): the models' hidden units are
// matched to the first model's by weight matching (MergeMany for three or
// more), with the permutation spec --spec auto gives (permute.BuiltinSpec),
// as the wm method does; then every model is read through its permutation
// (gathered block by block, never materialised) by whatever method merges
// them. A base model that is not one of the models is read as it is: task
// vectors are taken against it in the first model's basis.

// alignment is the permutations of an aligned job.
type alignment struct {
	spec  *permute.Spec
	perms []permute.Perms // per model
}

// align computes the permutations of the job's models.
func (j *Job) align(ctx context.Context) error {
	if len(j.Models) < 2 {
		return nil
	}
	spec, err := permute.BuiltinSpec("auto", j.Models[0], nil)
	if err != nil {
		return fmt.Errorf("align: %w", err)
	}
	if err := spec.Validate(permute.Shapes(j.Models[0])); err != nil {
		return fmt.Errorf("align: %w", err)
	}
	mo := permute.MatchOptions{Restarts: permute.AutoRestarts(spec, permute.Shapes(j.Models[0]))}
	res, err := permute.MatchModels(ctx, spec, j.Models, mo)
	if err != nil {
		return fmt.Errorf("align: %w", err)
	}
	// MergeMany brings every model to a common basis, the first's
	// permuted too: re-based on the first model's own basis, model i is
	// read through q_i[v] = p_i[p_0^-1[v]]
	perms := res.Perms
	if inv := perms[0].Inverse(); len(perms) > 0 {
		rebased := make([]permute.Perms, len(perms))
		for i, p := range perms {
			rebased[i] = permute.Perms{}
			for g, pg := range p {
				q := make([]int, len(pg))
				for v := range q {
					q[v] = pg[inv[g][v]]
				}
				rebased[i][g] = q
			}
		}
		perms = rebased
	}
	j.aligned = &alignment{spec: spec, perms: perms}
	if len(j.Models) == 2 {
		j.Note("aligned to the first model by weight matching: %d sweeps, distance %.6g -> %.6g", res.Sweeps, res.DistanceBefore, res.DistanceAfter)
	} else {
		j.Note("aligned %d models by MergeMany in %d rounds", len(j.Models), res.Sweeps)
	}
	return nil
}

// alignInputs reads a tensor's models through their permutations.
func (j *Job) alignInputs(t *TensorJob) error {
	if j.aligned == nil {
		return nil
	}
	for i, in := range t.Models {
		x, err := permuted(in, j.aligned.spec, j.aligned.perms[i])
		if err != nil {
			return fmt.Errorf("align: %w", err)
		}
		t.Models[i] = x
	}
	if j.BaseIndex >= 0 {
		t.Base = t.Models[j.BaseIndex]
	}
	return nil
}

// affineAsFn turns an affine kernel whose inputs are read through a
// permutation (or are in memory) into the equivalent elementwise kernel:
// the fused kernel reads the inputs' bytes in place.
func affineAsFn(k *Kernel) *Kernel {
	if k == nil || k.Coef == nil {
		return k
	}
	plain := true
	for _, in := range k.Inputs {
		plain = plain && in.Data != nil && in.index == nil
	}
	if plain {
		return k
	}
	coef := k.Coef
	return &Kernel{Inputs: k.Inputs, Done: k.Done, Fn: func(_ int, in [][]float64, out []float64) {
		for j := range out {
			var s float64
			for i, c := range coef {
				s += c * in[i][j]
			}
			out[j] = s
		}
	}}
}
