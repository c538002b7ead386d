package merge

// dare-linear: DARE (Yu et al., 2024): drop each task-vector entry with
// probability 1 - density, rescale the kept ones, add.
func init() {
	Register(gtaMethod{about: about{name: "dare-linear", doc: "DARE: drop task-vector entries at random, rescale, add"},
		sparsify: Random})
}
