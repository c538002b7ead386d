// Package mkgolden reads wtool's golden vectors for mergekit's merge methods
// (testdata/mergekit, see its README) and checks a merge implementation
// against them with one call:
//
//	func TestTiesGolden(t *testing.T) {
//		mkgolden.Check(t, "ties", func(c *mkgolden.Case, seed uint64) ([]float32, error) {
//			return myTies(c.Inputs, c.BaseModel, c.Parameters, seed) // adapt to the method's API
//		})
//	}
//
// Deterministic cases are compared value by value with the case's absolute
// tolerance; cases that mergekit refuses must make the implementation return
// an error; random methods (DARE, DELLA) are checked by their statistics
// over many seeds (see Case.Verify).
package mkgolden

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// ErrSkip, returned (or wrapped) by a Func, skips the case instead of failing
// it: for cases an implementation deliberately does not support yet. The
// error's message is reported.
var ErrSkip = errors.New("mkgolden: case skipped")

// NonFinite is the Error of cases whose mergekit result is Inf or NaN (a
// zero divisor): the implementation must return an error or a non-finite
// value (wtool refuses to write those).
const NonFinite = "non-finite result"

// DefaultRuns is the number of seeds a random case is run with by Check.
const DefaultRuns = 500

// File is one method's golden vectors.
type File struct {
	Method string `json:"method"`
	// Mergekit names the mergekit source the values come from.
	Mergekit struct {
		Repository string `json:"repository"`
		Commit     string `json:"commit"`
		Version    string `json:"version"`
	} `json:"mergekit"`
	Cases []*Case `json:"cases"`
}

// Case is one merge of one tensor: inputs, parameters and what mergekit
// gives (or refuses).
type Case struct {
	// Method is mergekit's method name (merge_method).
	Method string `json:"-"`
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	// Tensor is the tensor name the case stands for (filters and embedding
	// handling look at it); IsEmbed says whether mergekit treats it as an
	// embedding (embed_tokens, lm_head).
	Tensor  string `json:"tensor"`
	IsEmbed bool   `json:"is_embed"`
	// BaseModel names the input that is base_model, "" when there is none.
	BaseModel string `json:"base_model"`
	// Parameters are the global parameters as a YAML config would write them
	// (only those set; defaults are the method's business).
	Parameters map[string]any `json:"parameters"`
	// Inputs in mergekit's order: the listed models, then the base model
	// when it is not one of them.
	Inputs []Input `json:"inputs"`

	// Resolved are the global parameters after mergekit's defaults, and
	// ResolvedModel the per-model ones (a model's missing parameter falls
	// back to the global section, then to the default). Nil for cases
	// mergekit refuses.
	Resolved      map[string]any            `json:"resolved_parameters"`
	ResolvedModel map[string]map[string]any `json:"resolved_model_parameters"`

	// Expected is the result to reproduce within Atol (absolute, per
	// entry); nil for error and random cases.
	Expected []float32 `json:"-"`
	Atol     float64   `json:"atol"`
	// Error is non-empty when mergekit refuses the inputs (or, for
	// NonFinite, produces Inf/NaN): the implementation must fail too.
	Error string `json:"error"`
	// MergekitError is mergekit's own message, for information.
	MergekitError string `json:"mergekit_error"`
	// MergekitDiffers explains why Expected is the formula's value and not
	// mergekit's (a mergekit bug wtool does not reproduce); MergekitValue is
	// then what mergekit gives.
	MergekitDiffers string    `json:"mergekit_differs"`
	MergekitValue   []float32 `json:"-"`
	// FormulaDeviation is the largest absolute difference between mergekit's
	// float32 result and the float64 formula of docs/mergekit.md.
	FormulaDeviation float64 `json:"formula_deviation"`
	Source           string  `json:"source"`
	Note             string  `json:"note"`
	// Random is set for the random methods' cases.
	Random *Random `json:"random"`

	raw struct {
		Expected      string `json:"expected"`
		MergekitValue string `json:"mergekit_value"`
	}
}

// Input is one input model's tensor and per-model parameters (as written in
// the config, before defaults).
type Input struct {
	Model  string         `json:"model"`
	Key    string         `json:"tensor"`
	Params map[string]any `json:"params"`
	Values []float32      `json:"-"`
}

// Random holds the statistical expectations of a random method's case.
type Random struct {
	// MergekitRuns is how many torch seeds Mean and Std were computed over.
	MergekitRuns int `json:"mergekit_runs"`
	// Mean and Std per entry of mergekit's outputs (nil when mergekit fails
	// on the case: see Case.MergekitDiffers).
	Mean []float32 `json:"-"`
	Std  []float32 `json:"-"`
	// Single-model cases: KeepProb is each entry's probability of being kept
	// (density for DARE; DELLA's rank-based probabilities), DeltaModel the
	// fine-tuned input, and every output must be
	// base + Factor * s * mask * (x - base) with s = L1(x - base) /
	// L1(mask * (x - base)) when Rescale is "l1", s = 1 when "none".
	KeepProb   []float32 `json:"-"`
	DeltaModel string    `json:"delta_model"`
	Rescale    string    `json:"rescale"`
	Factor     float64   `json:"factor"`

	raw struct {
		Mean     string `json:"mean"`
		Std      string `json:"std"`
		KeepProb string `json:"keep_prob"`
	}
}

// UnmarshalJSON decodes a Random with its tensor keys.
func (r *Random) UnmarshalJSON(b []byte) error {
	type plain Random
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	return json.Unmarshal(b, &r.raw)
}

// UnmarshalJSON decodes a Case with its tensor keys.
func (c *Case) UnmarshalJSON(b []byte) error {
	type plain Case
	if err := json.Unmarshal(b, (*plain)(c)); err != nil {
		return err
	}
	return json.Unmarshal(b, &c.raw)
}

// Input returns the input named model, or nil.
func (c *Case) Input(model string) *Input {
	for i := range c.Inputs {
		if c.Inputs[i].Model == model {
			return &c.Inputs[i]
		}
	}
	return nil
}

// Base returns the base model's input, or nil when the case has none.
func (c *Case) Base() *Input {
	if c.BaseModel == "" {
		return nil
	}
	return c.Input(c.BaseModel)
}

// Numel is the number of entries of the case's tensors.
func (c *Case) Numel() int {
	n := 1
	for _, d := range c.Shape {
		n *= d
	}
	return n
}

// Dir returns the directory of the golden vectors (testdata/mergekit of the
// module this package is in).
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return filepath.Join("testdata", "mergekit")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "mergekit")
}

// Methods lists the methods that have golden vectors, sorted.
func Methods() ([]string, error) {
	ms, err := filepath.Glob(filepath.Join(Dir(), "*.json"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		out = append(out, strings.TrimSuffix(filepath.Base(m), ".json"))
	}
	sort.Strings(out)
	return out, nil
}

// Load reads one method's golden vectors (method.json and
// method.safetensors).
func Load(method string) (*File, error) {
	jpath := filepath.Join(Dir(), method+".json")
	b, err := os.ReadFile(jpath)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", jpath, err)
	}
	if f.Method != method {
		return nil, fmt.Errorf("%s: method is %q, want %q", jpath, f.Method, method)
	}
	spath := filepath.Join(Dir(), method+".safetensors")
	st, err := safetensors.Open(spath)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	read := func(c *Case, key string) ([]float32, error) {
		info, ok := st.Header.Lookup(key)
		if !ok {
			return nil, fmt.Errorf("%s: case %q: tensor %q not found", spath, c.Name, key)
		}
		if info.DType != tensors.F32 {
			return nil, fmt.Errorf("%s: tensor %q is %s, want F32", spath, key, info.DType)
		}
		shape := make([]int, len(info.Shape))
		for i, d := range info.Shape {
			shape[i] = int(d)
		}
		if !slices.Equal(shape, c.Shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, case %q says %v", spath, key, shape, c.Name, c.Shape)
		}
		buf := make([]byte, info.Size())
		if err := st.ReadTensor(key, buf); err != nil {
			return nil, err
		}
		out := make([]float32, c.Numel())
		if err := tensors.DecodeFloat32(out, buf, tensors.F32); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", spath, key, err)
		}
		return out, nil
	}
	for _, c := range f.Cases {
		c.Method = method
		for i := range c.Inputs {
			if c.Inputs[i].Values, err = read(c, c.Inputs[i].Key); err != nil {
				return nil, err
			}
			if c.Inputs[i].Params == nil {
				c.Inputs[i].Params = map[string]any{}
			}
		}
		if c.Parameters == nil {
			c.Parameters = map[string]any{}
		}
		if c.BaseModel != "" && c.Base() == nil && c.Error == "" {
			return nil, fmt.Errorf("%s: case %q: base model %q is not an input", jpath, c.Name, c.BaseModel)
		}
		if c.raw.Expected != "" {
			if c.Expected, err = read(c, c.raw.Expected); err != nil {
				return nil, err
			}
		}
		if c.raw.MergekitValue != "" {
			if c.MergekitValue, err = read(c, c.raw.MergekitValue); err != nil {
				return nil, err
			}
		}
		if r := c.Random; r != nil {
			for _, kv := range []struct {
				key string
				dst *[]float32
			}{{r.raw.Mean, &r.Mean}, {r.raw.Std, &r.Std}, {r.raw.KeepProb, &r.KeepProb}} {
				if kv.key == "" {
					continue
				}
				if *kv.dst, err = read(c, kv.key); err != nil {
					return nil, err
				}
			}
			if r.KeepProb != nil && c.Input(r.DeltaModel) == nil {
				return nil, fmt.Errorf("%s: case %q: delta model %q is not an input", jpath, c.Name, r.DeltaModel)
			}
		}
		if c.Expected == nil && c.Error == "" && c.Random == nil {
			return nil, fmt.Errorf("%s: case %q has no expected value, error or statistics", jpath, c.Name)
		}
	}
	return &f, nil
}

// Func merges a case's inputs with the implementation under test and
// returns the merged tensor's values in C order. seed is 0 for
// deterministic cases; random cases are called with seeds 1, 2, ...
type Func func(c *Case, seed uint64) ([]float32, error)

// Check loads method's golden vectors and verifies fn on every case, each in
// its own subtest; random cases run DefaultRuns seeds.
func Check(t *testing.T, method string, fn Func) {
	t.Helper()
	f, err := Load(method)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			err := c.Verify(fn, DefaultRuns)
			if errors.Is(err, ErrSkip) {
				t.Skip(err)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// Verify runs fn on the case and reports how it disagrees with mergekit (nil
// when it agrees):
//   - deterministic cases: every entry within Atol of Expected;
//   - cases mergekit refuses: fn returns an error (for NonFinite, an error or
//     a non-finite value);
//   - random cases (Random != nil): the same seed gives the same bytes and
//     another seed other bytes; over runs seeds 1..runs, each entry's mean is
//     within 6 standard errors of mergekit's mean and the total variance
//     within 20% of mergekit's; single-model cases also: each entry is kept
//     with its KeepProb (within 6 standard errors), and every output has the
//     rescaled-mask structure described at Random.
func (c *Case) Verify(fn Func, runs int) error {
	switch {
	case c.Error != "":
		out, err := call(fn, c, 0)
		if errors.Is(err, ErrSkip) {
			return err
		}
		if err != nil {
			return nil
		}
		if c.Error == NonFinite && out != nil && !allFinite(out) {
			return nil
		}
		return fmt.Errorf("%s/%s: mergekit refuses this case (%s; mergekit: %s) but the implementation returned a result",
			c.Method, c.Name, c.Error, c.MergekitError)
	case c.Random != nil:
		return c.verifyRandom(fn, runs)
	default:
		out, err := call(fn, c, 0)
		if err != nil {
			return err
		}
		return compare(c, out, c.Expected, c.Atol)
	}
}

func call(fn Func, c *Case, seed uint64) ([]float32, error) {
	out, err := fn(c, seed)
	if err != nil {
		if errors.Is(err, ErrSkip) {
			return nil, err
		}
		return nil, fmt.Errorf("%s/%s (seed %d): %w", c.Method, c.Name, seed, err)
	}
	if len(out) != c.Numel() {
		return nil, fmt.Errorf("%s/%s: the result has %d values, want %d (shape %v)", c.Method, c.Name, len(out), c.Numel(), c.Shape)
	}
	return out, nil
}

func allFinite(v []float32) bool {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return false
		}
	}
	return true
}

func compare(c *Case, got, want []float32, atol float64) error {
	worst, wi := -1.0, -1
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, wi = d, i
		}
	}
	if worst > atol {
		return fmt.Errorf("%s/%s: entry %d is %g, want %g (|difference| %.3g > tolerance %.3g)",
			c.Method, c.Name, wi, got[wi], want[wi], worst, atol)
	}
	return nil
}

func (c *Case) scale() float64 {
	s := 1.0
	for _, in := range c.Inputs {
		for _, v := range in.Values {
			s = math.Max(s, math.Abs(float64(v)))
		}
	}
	return s
}

func (c *Case) verifyRandom(fn Func, runs int) error {
	if runs < 50 {
		runs = 50
	}
	r := c.Random
	n := c.Numel()
	first, err := call(fn, c, 1)
	if err != nil {
		return err
	}
	again, err := call(fn, c, 1)
	if err != nil {
		return err
	}
	if !slices.Equal(first, again) {
		return fmt.Errorf("%s/%s: seed 1 gave two different results: not reproducible", c.Method, c.Name)
	}
	other, err := call(fn, c, 2)
	if err != nil {
		return err
	}
	if slices.Equal(first, other) {
		return fmt.Errorf("%s/%s: seeds 1 and 2 gave the same result: the seed is not used", c.Method, c.Name)
	}
	base := c.Base()
	var delta []float64
	var keepCount []int
	if r.KeepProb != nil {
		if base == nil {
			return fmt.Errorf("%s/%s: a single-model random case needs a base model", c.Method, c.Name)
		}
		x := c.Input(r.DeltaModel).Values
		delta = make([]float64, n)
		for i := range delta {
			delta[i] = float64(x[i]) - float64(base.Values[i])
		}
		keepCount = make([]int, n)
	}
	mean := make([]float64, n)
	m2 := make([]float64, n)
	atol := 1e-6 * c.scale()
	for run := 1; run <= runs; run++ {
		out := first
		if run > 1 {
			if out, err = call(fn, c, uint64(run)); err != nil {
				return err
			}
		}
		if !allFinite(out) {
			return fmt.Errorf("%s/%s (seed %d): non-finite result", c.Method, c.Name, run)
		}
		for i, v := range out {
			d := float64(v) - mean[i]
			mean[i] += d / float64(run)
			m2[i] += d * (float64(v) - mean[i])
		}
		if delta != nil {
			if err := c.checkMaskStructure(out, base.Values, delta, keepCount, atol, run); err != nil {
				return err
			}
		}
	}
	N := float64(runs)
	const z = 6.0
	if r.Mean != nil {
		M := float64(r.MergekitRuns)
		var varW, varM float64
		for i := range mean {
			vw := m2[i] / N
			vm := float64(r.Std[i]) * float64(r.Std[i])
			varW += vw
			varM += vm
			se := math.Sqrt(vw/N + vm/M)
			if d := math.Abs(mean[i] - float64(r.Mean[i])); d > z*se+atol {
				return fmt.Errorf("%s/%s: entry %d: mean over %d seeds is %.6g, mergekit's over %.0f is %.6g (%.1f standard errors apart)",
					c.Method, c.Name, i, runs, mean[i], M, r.Mean[i], d/math.Max(se, 1e-300))
			}
		}
		if varM > 0 && (varW < 0.8*varM || varW > 1.25*varM) {
			return fmt.Errorf("%s/%s: total variance over %d seeds is %.4g, mergekit's is %.4g (ratio %.3f, want 0.8..1.25)",
				c.Method, c.Name, runs, varW, varM, varW/varM)
		}
	}
	if keepCount != nil {
		for i, k := range keepCount {
			p := float64(r.KeepProb[i])
			f := float64(k) / N
			if math.Abs(f-p) > z*math.Sqrt(p*(1-p)/N)+1/N {
				return fmt.Errorf("%s/%s: entry %d kept in %d of %d runs (%.3f), want probability %.3f",
					c.Method, c.Name, i, k, runs, f, p)
			}
		}
	}
	return nil
}

// checkMaskStructure checks that out = base + Factor*s*mask*delta for the
// mask of the entries that changed, with s the L1 rescale (or 1).
func (c *Case) checkMaskStructure(out, base []float32, delta []float64, keepCount []int, atol float64, run int) error {
	r := c.Random
	var l1All, l1Kept float64
	for i, v := range out {
		l1All += math.Abs(delta[i])
		if v != base[i] {
			keepCount[i]++
			l1Kept += math.Abs(delta[i])
		}
	}
	s := r.Factor
	if r.Rescale == "l1" && l1All >= 1e-7 && l1Kept >= 1e-7 {
		s *= l1All / l1Kept
	}
	for i, v := range out {
		want := float64(base[i])
		if v != base[i] {
			want += s * delta[i]
		}
		if d := math.Abs(float64(v) - want); d > atol+1e-6*math.Abs(s*delta[i]) {
			return fmt.Errorf("%s/%s (seed %d): entry %d is %g, want base + %.6g * delta = %g (rescale %s): not a rescaled mask of the task vector",
				c.Method, c.Name, run, i, v, s, want, r.Rescale)
		}
	}
	return nil
}
