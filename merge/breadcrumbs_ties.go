package merge

// breadcrumbs-ties: Model Breadcrumbs' sparsification, then TIES' sign
// election (mergekit's breadcrumbs_ties; not normalized unless asked).
func init() {
	Register(gtaMethod{about: about{name: "breadcrumbs-ties",
		doc: "Model Breadcrumbs with TIES sign election"},
		custom: breadcrumbs, consensus: true, extra: []Param{gammaParam()}})
}
