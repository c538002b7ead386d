package merge

// breadcrumbs: Model Breadcrumbs (Davari and Belilovsky, 2023) as mergekit
// computes it: each task vector loses its gamma largest magnitudes
// (outliers) and its smallest, keeping int(density n) entries; the weighted
// task vectors are added (breadcrumbs_ties: after TIES' sign election).
func init() {
	Register(gtaMethod{about: about{name: "breadcrumbs", aliases: []string{"model-breadcrumbs"},
		doc: "Model Breadcrumbs: drop each task vector's largest (gamma) and smallest magnitudes, add"},
		custom: breadcrumbs, extra: []Param{gammaParam()}})
}

func breadcrumbs(*Job, Rescale) (sparsifier, error) { return breadcrumbsSparsifier{}, nil }

// gammaParam is breadcrumbs' fraction of outliers.
func gammaParam() Param {
	return Param{Name: "gamma", Kind: Number, Scope: PerModel, Varies: true, Default: Num(0.01), Check: InRange(0, 1, false, false),
		Doc: "breadcrumbs: fraction of each task vector's largest magnitudes dropped as outliers (default 0.01)"}
}
