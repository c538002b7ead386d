package lowrank

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
)

// scaling is one compression method: how a weight is scaled before its
// truncated SVD and unscaled after (plain SVD, Fisher-weighted, activation-
// aware, whitening). Each lives in its own file and registers itself
// (registerScaling) from an init function: adding a method is adding a
// file.
type scaling interface {
	// Name is the method's name (CompressOptions.Method).
	Name() string
	// Check validates the options against the model before any target is
	// chosen (the data the method needs is given and fits the model).
	Check(o CompressOptions, m *checkpoint.Model) error
	// CheckTarget validates the data for one target to factorise.
	CheckTarget(o CompressOptions, t *target) error
	// Factor factorises one target's weight w ([out, in], t.m x t.n); the
	// note, if any, is reported with the target.
	Factor(w []float32, t *target, o CompressOptions) (*Factorization, string, error)
}

var scalings = struct {
	sync.RWMutex
	byName map[string]scaling
	order  []string
}{byName: map[string]scaling{}}

// registerScaling adds a compression method at position rank of Methods
// (init functions run in file order; the list keeps the order of the
// documentation: svd, fwsvd, asvd, whiten).
func registerScaling(s scaling, rank int) {
	scalings.Lock()
	defer scalings.Unlock()
	if _, dup := scalings.byName[s.Name()]; dup {
		panic(fmt.Sprintf("lowrank: compression method %q registered twice", s.Name()))
	}
	scalings.byName[s.Name()] = s
	for len(scalings.order) <= rank {
		scalings.order = append(scalings.order, "")
	}
	scalings.order[rank] = s.Name()
	Methods = slices.DeleteFunc(slices.Clone(scalings.order), func(n string) bool { return n == "" })
}

// scalingOf returns the compression method of that name.
func scalingOf(name string) (scaling, error) {
	scalings.RLock()
	defer scalings.RUnlock()
	if s, ok := scalings.byName[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("unknown compression method %q (want %s)", name, strings.Join(Methods, ", "))
}

// checkModuleStats is the check of the methods that need input statistics
// for every target (asvd, whiten).
func checkModuleStats(o CompressOptions, t *target) error {
	if !o.Stats.Has(t.module) {
		return fmt.Errorf("no input statistics for module %q (%s needs them for every target)", t.module, o.Method)
	}
	return nil
}

// needStats is the option check of the methods that need input statistics.
func needStats(o CompressOptions) error {
	if o.Stats == nil {
		return fmt.Errorf("%s needs input statistics (--stats or --calib)", o.Method)
	}
	return nil
}
