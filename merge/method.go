package merge

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/checkpoint"
)

// Method is one merge method. Each method lives in its own file and
// registers itself (Register) from an init function: adding a method is
// adding a file.
//
// A method describes its parameters (Params: names, types, defaults, scope);
// Plan.Validate decodes and checks them against that schema, then calls
// Check for what the schema cannot say (how many models, whether a base is
// needed). Execute opens the models and calls Start, whose Merger computes
// the output tensor by tensor, chunk by chunk.
type Method interface {
	// Name is the canonical name, lower case with dashes ("dare-ties").
	Name() string
	// Aliases are other accepted names (mergekit's spellings are accepted
	// anyway: names are compared in lower case with '_' as '-').
	Aliases() []string
	// Doc is a one-line description.
	Doc() string
	// Params is the parameter schema.
	Params() []Param
	// Check validates a plan whose parameters the schema already accepted.
	Check(p *Plan) error
	// Start begins a merge on an opened job: the per-merge work that comes
	// before streaming (alignment, reading statistics) happens here.
	Start(ctx context.Context, j *Job) (Merger, error)
}

// Merger is one merge in progress. Tensor says how one floating-point
// tensor of the output is computed; it is called once per tensor, from
// several goroutines at a time, in about file order. Integer and other
// non-float tensors (taken from the first model) and tensors only in the
// base (passed through) never reach it.
//
// A Merger may also implement Writer (it writes the whole output itself),
// and io.Closer (called at the end of the merge).
type Merger interface {
	Tensor(ctx context.Context, t *TensorJob) (*Kernel, error)
}

// Writer is implemented by mergers that write the output themselves:
// methods that change the architecture (PLeaS's wider layers) or the set
// of tensors.
type Writer interface {
	Write(ctx context.Context, j *Job, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error)
}

// Kernel computes one output tensor. Exactly one of Coef, Fn and Chunk is
// set:
//
//   - Coef: the tensor is the affine combination sum_i Coef[i] Inputs[i],
//     computed by a fused kernel on the inputs' bytes (float32 arithmetic
//     for 16-bit outputs, float64 otherwise);
//   - Fn: an elementwise kernel in float64, called on blocks of at most
//     BlockSize elements, concurrently, with the decoded values of Inputs
//     (in[i][k] is element lo+k of Inputs[i]) and rounded once to the
//     output dtype;
//   - Chunk: full control (methods that need whole rows or a layer);
//     Inputs is then only used for fault reports.
//
// Whole-tensor quantities (norms, thresholds, sums) are computed before
// the Kernel is returned, with TensorJob's streaming passes. Done, if set,
// is called after the tensor's last chunk.
type Kernel struct {
	Inputs []*Input
	Coef   []float64
	Fn     func(lo int, in [][]float64, out []float64)
	Chunk  checkpoint.ChunkFunc
	Done   func()
}

var registry = struct {
	sync.RWMutex
	byName  map[string]Method
	methods []Method
}{byName: map[string]Method{}}

func normalizeName(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "_", "-")
}

// Register adds a method to the registry. A name or alias that is already
// registered panics (a programming error).
func Register(m Method) {
	registry.Lock()
	defer registry.Unlock()
	for _, n := range append([]string{m.Name()}, m.Aliases()...) {
		k := normalizeName(n)
		if _, dup := registry.byName[k]; dup {
			panic(fmt.Sprintf("merge: method name %q registered twice", n))
		}
		registry.byName[k] = m
	}
	registry.methods = append(registry.methods, m)
	slices.SortFunc(registry.methods, func(a, b Method) int { return strings.Compare(a.Name(), b.Name()) })
}

// Lookup finds a method by name or alias (case-insensitive, '_' and '-'
// alike, so mergekit's task_arithmetic is task-arithmetic).
func Lookup(name string) (Method, error) {
	registry.RLock()
	defer registry.RUnlock()
	if m, ok := registry.byName[normalizeName(name)]; ok {
		return m, nil
	}
	var names []string
	for _, m := range registry.methods {
		names = append(names, m.Name())
	}
	return nil, fmt.Errorf("unsupported merge method %q (wtool supports %s)", name, strings.Join(names, ", "))
}

// Methods returns every registered method, sorted by name.
func Methods() []Method {
	registry.RLock()
	defer registry.RUnlock()
	return slices.Clone(registry.methods)
}

// CanonicalMethod maps a user spelling (mergekit's task_arithmetic,
// dare_ties, weight_matching, ...) to the canonical method name.
func CanonicalMethod(name string) (string, error) {
	m, err := Lookup(name)
	if err != nil {
		return "", err
	}
	return m.Name(), nil
}

// about implements the descriptive part of Method.
type about struct {
	name, doc string
	aliases   []string
}

func (a about) Name() string      { return a.name }
func (a about) Doc() string       { return a.doc }
func (a about) Aliases() []string { return a.aliases }
