package merge

// della-linear: DELLA's MagPrune and rescaling, then the weighted task
// vectors are added (mergekit's della_linear; not normalized unless asked).
func init() {
	Register(gtaMethod{about: about{name: "della-linear", doc: "DELLA without sign election: keep entries by magnitude-ranked probabilities, add"},
		custom: dellaSparsifierOf, randomCustom: true, extra: []Param{epsilonParam()}})
}
