package merge

// dare-ties: DARE's random drop and rescale, then TIES' sign election.
func init() {
	Register(gtaMethod{about: about{name: "dare-ties", doc: "DARE with TIES sign election"},
		sparsify: Random, consensus: true})
}
