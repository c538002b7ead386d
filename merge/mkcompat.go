package merge

import "fmt"

// requireWeights refuses a plan read from a mergekit configuration in
// which a model other than the base model has no weight (per model or among
// the global parameters): mergekit requires one. On the command line
// weights default to 1.
func requireWeights(p *Plan) error {
	if p.Source == nil { // built from flags or in code
		return nil
	}
	if _, ok := p.Params["weight"]; ok {
		return nil
	}
	for _, mi := range p.Models {
		if _, ok := mi.Params["weight"]; !ok && mi.Path != p.Base {
			return fmt.Errorf("%s needs a weight for every model but the base model, as in mergekit (parameters: {weight: ...}); %s has none", p.Method, mi.Path)
		}
	}
	return nil
}
