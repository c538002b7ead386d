package merge

// della: DELLA-merging (Deep et al., 2024) as mergekit computes it:
// MagPrune (per-row, magnitude-ranked keep probabilities around density,
// sparsify_della.go), rescaled (l1 by default, as in mergekit; inverse is
// the paper's 1/p), then TIES' sign election and normalization.
func init() {
	Register(gtaMethod{about: about{name: "della", doc: "DELLA: keep task-vector entries at random, larger magnitudes more likely, then TIES"},
		custom: dellaSparsifierOf, randomCustom: true, consensus: true, normalize: true, extra: []Param{epsilonParam()}})
}

func dellaSparsifierOf(j *Job, r Rescale) (sparsifier, error) {
	return dellaSparsifier{seed: uint64(j.Plan.Global("seed").Int), inverse: r == RescaleInverse}, nil
}

// epsilonParam is DELLA's half-width of the keep probabilities.
func epsilonParam() Param {
	return Param{Name: "epsilon", Kind: Number, Scope: PerModel, Varies: true, Default: Num(0.15), Check: InRange(0, 1, false, true),
		Doc: "della: keep probabilities range over density -/+ epsilon by magnitude rank within each row (default 0.15)"}
}
