package merge

// ties: TIES-merging (Yadav et al., 2023) as mergekit computes it: trim each
// task vector to its int(density*n) largest magnitudes (an exact streaming
// top-k selection; ties at the threshold kept in index order), elect each
// entry's sign by the weighted sum (ties count as +), average the agreeing
// entries by their weights.
func init() {
	Register(gtaMethod{about: about{name: "ties", aliases: []string{"ties-merging"},
		doc: "TIES: trim task vectors by magnitude, elect signs, average agreeing entries"},
		sparsify: Magnitude, consensus: true, normalize: true})
}
