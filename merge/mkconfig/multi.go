package mkconfig

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Multi is a multi-stage configuration (mergekit-multi): several YAML
// documents, each a configuration with a name: (the final one may have
// none); a model reference whose path is a stage name uses that stage's
// output.
type Multi struct {
	// Stages in file order.
	Stages []*Config
	// Deps maps a stage name ("" for the unnamed one) to the names of the
	// stages it reads, sorted.
	Deps map[string][]string
}

// ReadMultiFile reads a multi-stage configuration file with WtoolKeys;
// errors name the file.
func ReadMultiFile(path string) (*Multi, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := ParseMulti(b, WtoolKeys)
	return m, withFile(err, path)
}

// ParseMulti parses a stream of YAML documents. Every document but one
// must have a distinct name:; a single document without a name is the
// final merge. Dependency cycles and names that are not valid directory
// names are refused. A single-document stream is a one-stage Multi whose
// stage keeps its Source.
func ParseMulti(data []byte, o ParseOptions) (*Multi, error) {
	docs, err := decodeDocs(data)
	if err != nil {
		return nil, err
	}
	m := &Multi{Deps: map[string][]string{}}
	seen := map[string]int{}
	for _, d := range docs {
		c, err := parseDoc(d, o, true)
		if err != nil {
			return nil, err
		}
		if first, dup := seen[c.Name]; dup {
			if c.Name == "" {
				return nil, errAt(c.Line, "a second configuration without name: (the first starts on line %d): only the final merge may be unnamed", first)
			}
			return nil, errAt(c.Lines["name"], "stage name %q is used twice (first on line %d)", c.Name, first)
		}
		if c.Name != "" && (strings.ContainsAny(c.Name, `/\`) || c.Name == "." || c.Name == "..") {
			return nil, errAt(c.Lines["name"], "stage name %q must be a plain directory name (stages are written to INTERMEDIATE_DIR/NAME)", c.Name)
		}
		seen[c.Name] = c.Line
		m.Stages = append(m.Stages, c)
	}
	if len(docs) == 1 {
		m.Stages[0].Source = append([]byte(nil), data...)
	}
	for _, c := range m.Stages {
		deps := map[string]bool{}
		c.mapRefs(func(r *ModelRef) {
			if _, ok := seen[r.Model.Path]; ok && r.Model.Path != "" {
				deps[r.Model.Path] = true
			}
		})
		if deps[c.Name] {
			return nil, errAt(c.Line, "stage %q uses its own output", c.Name)
		}
		var names []string
		for n := range deps {
			names = append(names, n)
		}
		sort.Strings(names)
		m.Deps[c.Name] = names
	}
	if _, err := m.Order(); err != nil {
		return nil, err
	}
	return m, nil
}

// Stage returns the stage with this name ("" for the unnamed one).
func (m *Multi) Stage(name string) *Config {
	for _, c := range m.Stages {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Order returns the stages in an order where every stage comes after the
// stages it reads (file order among independent stages), or an error naming
// a dependency cycle.
func (m *Multi) Order() ([]*Config, error) {
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var out []*Config
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			cycle := append(path[indexOf(path, name):], name)
			return errAt(m.Stage(name).Line, "the stages depend on each other in a cycle: %s", strings.Join(quoteAll(cycle), " -> "))
		case 2:
			return nil
		}
		state[name] = 1
		for _, d := range m.Deps[name] {
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, m.Stage(name))
		return nil
	}
	for _, c := range m.Stages {
		if err := visit(c.Name, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return 0
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		if x == "" {
			out[i] = "(unnamed)"
		} else {
			out[i] = fmt.Sprintf("%q", x)
		}
	}
	return out
}

// Resolve replaces, in every stage, the references to other stages by
// dir(name) (mergekit: INTERMEDIATE_DIR/NAME), keeping their revision and
// adapter.
func (m *Multi) Resolve(dir func(stage string) string) {
	names := map[string]bool{}
	for _, c := range m.Stages {
		if c.Name != "" {
			names[c.Name] = true
		}
	}
	for _, c := range m.Stages {
		c.mapRefs(func(r *ModelRef) {
			if names[r.Model.Path] {
				r.Model.Path = dir(r.Model.Path)
			}
		})
	}
}
