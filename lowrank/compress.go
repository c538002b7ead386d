package lowrank

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Methods are the compression methods.
var Methods = []string{"svd", "fwsvd", "asvd", "whiten"}

// InputStats gives the statistics of a module's inputs (a single-model
// *stats.File, or Stats.Lookup of statistics in memory).
type InputStats = stats.Lookup

// StatsOf adapts in-memory statistics to InputStats.
func StatsOf(s *stats.Stats) InputStats { return s.Lookup() }

// Override sets the rank rule of the tensors whose names match Pattern.
type Override struct {
	Pattern *regexp.Regexp
	Rule    RankRule
}

// CompressOptions describe a compression.
type CompressOptions struct {
	Method    string           // svd, fwsvd, asvd or whiten
	Rule      RankRule         // the rank rule
	Overrides []Override       // per-tensor rules; the first match wins
	Targets   []*regexp.Regexp // tensors to factorise (default: DefaultTargets)
	// Format is "factored" (M.0.weight, M.1.weight, M.1.bias) or "dense"
	// (the rank-r reconstruction in M.weight).
	Format string
	DType  tensors.DType // output dtype of floating tensors (0 keeps each)
	SVD    SVDOptions
	Fisher *fisher.File // fwsvd
	PerRow bool         // fwsvd: weight output rows instead of input features
	Stats  InputStats   // asvd, whiten
	Alpha  float64      // asvd exponent (default 0.5)
	// Progress, if set, is called as tensors are written.
	Progress func(done, total int64)
}

// DefaultTargets match every weight of rank >= 2 except embeddings and
// output heads.
var DefaultTargets = []*regexp.Regexp{regexp.MustCompile(`\.weight$`)}

var excludedByDefault = regexp.MustCompile(`(^|\.)(embed_tokens|embeddings?|wte|wpe|lm_head|embed_out|output)\.weight$`)

// TensorReport says what happened to one target tensor.
type TensorReport struct {
	Name      string  `json:"name"`
	Shape     []int64 `json:"shape"`
	Rank      int     `json:"rank"`
	Params    int64   `json:"params"`      // parameters of the original matrix
	Kept      int64   `json:"kept_params"` // parameters after (factors, or the matrix if left dense)
	RelError  float64 `json:"rel_error"`   // ||W - W'||_F / ||W||_F
	Energy    float64 `json:"energy"`      // kept fraction of the (scaled) squared singular values
	LeftDense bool    `json:"left_dense"`  // factorising would not have saved parameters
	Note      string  `json:"note,omitempty"`
}

// target describes a tensor to factorise.
type target struct {
	name, module string
	shape        []int64
	m, n         int
	rule         RankRule
	fixedRank    int  // 0 for energy rules
	dense        bool // known in advance to be left dense
	hasBias      bool
	dtype        tensors.DType // of the weight
	biasDType    tensors.DType
}

// result of one module, computed once for all its output tensors
type moduleResult struct {
	once  sync.Once
	f     *Factorization
	err   error
	note  string
	parts int
}

// Compress factorises the target weights of m and writes the compressed
// checkpoint to out, streaming one matrix at a time; every other tensor
// passes through. It returns a report per target.
func Compress(ctx context.Context, m *checkpoint.Model, out string, o CompressOptions, wopts checkpoint.WriteOptions) ([]TensorReport, *checkpoint.Written, error) {
	if !slices.Contains(Methods, o.Method) {
		return nil, nil, fmt.Errorf("unknown compression method %q (want %s)", o.Method, strings.Join(Methods, ", "))
	}
	if o.Format == "" {
		o.Format = "factored"
	}
	if o.Format != "factored" && o.Format != "dense" {
		return nil, nil, fmt.Errorf("unknown format %q (want factored or dense)", o.Format)
	}
	if err := o.Rule.Validate(); err != nil {
		return nil, nil, err
	}
	if o.Alpha == 0 {
		o.Alpha = 0.5
	}
	switch o.Method {
	case "fwsvd":
		if o.Fisher == nil {
			return nil, nil, fmt.Errorf("fwsvd needs a Fisher file (--fisher)")
		}
		if err := o.Fisher.CheckAgainst(m); err != nil {
			return nil, nil, err
		}
	case "asvd", "whiten":
		if o.Stats == nil {
			return nil, nil, fmt.Errorf("%s needs input statistics (--stats or --calib)", o.Method)
		}
	}
	targets, err := findTargets(m, o)
	if err != nil {
		return nil, nil, err
	}
	if o.Method == "fwsvd" {
		for _, t := range targets {
			if !o.Fisher.Has(t.name) {
				return nil, nil, fmt.Errorf("%s: no Fisher information for %q", o.Fisher.Path, t.name)
			}
		}
	}
	if o.Method == "asvd" || o.Method == "whiten" {
		for _, t := range targets {
			if !o.Stats.Has(t.module) {
				return nil, nil, fmt.Errorf("no input statistics for module %q (%s needs them for every target)", t.module, o.Method)
			}
		}
	}
	byName := map[string]*target{}
	byModule := map[string]*target{}
	for _, t := range targets {
		byName[t.name] = t
		byModule[t.module] = t
	}
	// entries of the output
	var entries []safetensors.Entry
	results := map[string]*moduleResult{}
	for _, e := range m.Entries() {
		if o.DType != 0 && e.DType.IsFloat() {
			e.DType = o.DType
		}
		mod, isBias := strings.CutSuffix(e.Name, ".bias")
		t, isTarget := byName[e.Name]
		if isBias {
			t, isTarget = byModule[mod]
		}
		if !isTarget || o.Format == "dense" {
			if isTarget && !isBias {
				results[t.module] = &moduleResult{parts: 1}
			}
			entries = append(entries, e)
			continue
		}
		if isBias {
			continue // emitted with the weight
		}
		results[t.module] = &moduleResult{}
		wdt := e.DType
		bdt := t.biasDType
		if o.DType != 0 {
			bdt = o.DType
		}
		k := t.fixedRank
		energy := k == 0
		if k == 0 {
			k = min(t.m, t.n) // the bound
		}
		keepDense := energy || t.dense
		factored := energy || !t.dense
		if keepDense {
			entries = append(entries, safetensors.Entry{Name: t.name, DType: wdt, Shape: t.shape, Optional: energy})
			if t.hasBias {
				entries = append(entries, safetensors.Entry{Name: t.module + ".bias", DType: bdt, Shape: []int64{int64(t.m)}, Optional: energy})
			}
			results[t.module].parts += 1 + btoi(t.hasBias)
		}
		if factored {
			s0, s1 := factorShapes(t.shape, k)
			entries = append(entries,
				safetensors.Entry{Name: t.module + ".0.weight", DType: wdt, Shape: s0, Bounded: energy, Optional: energy},
				safetensors.Entry{Name: t.module + ".1.weight", DType: wdt, Shape: s1, Bounded: energy, Optional: energy})
			if t.hasBias {
				entries = append(entries, safetensors.Entry{Name: t.module + ".1.bias", DType: bdt, Shape: []int64{int64(t.m)}, Optional: energy})
			}
			results[t.module].parts += 2 + btoi(t.hasBias)
		}
	}
	var mu sync.Mutex
	reports := map[string]*TensorReport{}
	compute := func(t *target) (*moduleResult, error) {
		mu.Lock()
		r := results[t.module]
		mu.Unlock()
		r.once.Do(func() {
			r.f, r.note, r.err = factorTarget(m, t, o)
			if r.err != nil {
				r.err = fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, r.err)
				return
			}
			rep := &TensorReport{Name: t.name, Shape: t.shape, Params: int64(t.m) * int64(t.n), Note: r.note,
				Rank: r.f.Rank, RelError: r.f.RelError, Energy: r.f.Energy}
			rep.LeftDense = o.Format == "factored" && !SavesParameters(t.m, t.n, r.f.Rank)
			if o.Format == "dense" || rep.LeftDense {
				rep.Kept = rep.Params
			} else {
				rep.Kept = int64(r.f.Rank) * int64(t.m+t.n)
			}
			if rep.LeftDense {
				rep.RelError, rep.Energy = 0, 1
			}
			mu.Lock()
			reports[t.name] = rep
			mu.Unlock()
		})
		return r, r.err
	}
	release := func(t *target) {
		mu.Lock()
		defer mu.Unlock()
		r := results[t.module]
		r.parts--
		if r.parts <= 0 {
			r.f = nil // free the factors once every part is written
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		mod, field := splitModule(e.Name)
		t := byModule[mod]
		if t == nil || (o.Format == "dense" && field == ".bias") {
			x, done, err := pass(ctx, e)
			if err != nil || x.DType == e.DType {
				return x, done, err
			}
			c, err := x.ConvertTo(e.DType)
			done()
			return c, nil, err
		}
		r, err := compute(t)
		if err != nil {
			return nil, nil, err
		}
		defer release(t)
		f := r.f
		leftDense := !SavesParameters(t.m, t.n, f.Rank)
		switch field {
		case ".weight":
			if o.Format == "factored" && !leftDense {
				return nil, nil, nil // optional: the factors are written instead
			}
			if o.Format == "factored" {
				return convertedView(m, e)
			}
			x, err := tensors.FromFloat32(e.Name, e.DType, t.shape, f.Dense())
			return x, nil, err
		case ".bias":
			if leftDense {
				return convertedView(m, e)
			}
			return nil, nil, nil
		case ".0.weight", ".1.weight", ".1.bias":
			if leftDense {
				return nil, nil, nil
			}
			s0, s1 := factorShapes(t.shape, f.Rank)
			switch field {
			case ".0.weight":
				x, err := tensors.FromFloat32(e.Name, e.DType, s0, f.A)
				return x, nil, err
			case ".1.weight":
				x, err := tensors.FromFloat32(e.Name, e.DType, s1, f.B)
				return x, nil, err
			}
			b, err := m.Tensor(mod + ".bias")
			if err != nil {
				return nil, nil, err
			}
			b, err = b.ConvertTo(e.DType)
			if err != nil {
				return nil, nil, err
			}
			return &tensors.Tensor{Name: e.Name, DType: b.DType, Shape: b.Shape, Data: b.Data}, nil, nil
		}
		return nil, nil, fmt.Errorf("unexpected output tensor %q", e.Name)
	}
	wopts, err = m.DefaultWriteOptions(wopts)
	if err != nil {
		return nil, nil, err
	}
	wopts.Progress = o.Progress
	if wopts.Workers == 0 {
		// one matrix at a time: the SVD already uses every core, and a second
		// one in flight only doubles the memory
		wopts.Workers = 1
	}
	var list []TensorReport
	collect := func() {
		list = list[:0]
		for _, t := range targets {
			if r := reports[t.name]; r != nil {
				list = append(list, *r)
			}
		}
	}
	if o.Format == "factored" {
		wopts.Metadata = withCompressionMetadata(wopts.Metadata, o)
		wopts.MetadataFor = rankMetadata
		if !checkpoint.IsSingleFile(out) {
			// compression.json is written from the reports each shard's
			// state holds, so parts and resumed runs give the same file
			wopts.State = &checkpoint.State{Finalizer: compressFinalizer, Save: func(dir string, shard []safetensors.Entry) error {
				st := compressState{Method: o.Method}
				mu.Lock()
				for _, e := range shard {
					mod, _ := splitModule(e.Name)
					if t := byModule[mod]; t != nil && reports[t.name] != nil && !slices.ContainsFunc(st.Reports, func(r TensorReport) bool { return r.Name == t.name }) {
						r := *reports[t.name]
						r.RelError, r.Energy = jsonSafe(r.RelError), jsonSafe(r.Energy)
						st.Reports = append(st.Reports, r)
					}
				}
				mu.Unlock()
				b, err := json.Marshal(st)
				if err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(dir, "reports.json"), b, 0o644)
			}}
		}
	}
	written, err := checkpoint.Write(ctx, out, entries, produce, wopts)
	if err != nil {
		return nil, nil, checkpoint.ExplainNonFinite(err, m)
	}
	collect()
	return list, written, nil
}

// compressState is what a shard of a factored directory output keeps for
// compression.json: the reports of the modules it holds.
type compressState struct {
	Method  string         `json:"method"`
	Reports []TensorReport `json:"reports"`
}

const compressFinalizer = "lowrank.compress"

// jsonSafe replaces a NaN or Inf (which JSON cannot hold; only possible
// with --allow-nonfinite) by -1 in what a shard's state records.
func jsonSafe(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return -1
	}
	return x
}

func init() { checkpoint.RegisterFinalizer(compressFinalizer, finalizeCompress) }

// finalizeCompress writes compression.json from every shard's reports.
func finalizeCompress(dir string, states []string) error {
	var method string
	var list []TensorReport
	for _, s := range states {
		var st compressState
		b, err := os.ReadFile(filepath.Join(s, "reports.json"))
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		if err != nil {
			return fmt.Errorf("compression state %s: %w", s, err)
		}
		method = st.Method
		for _, r := range st.Reports {
			if !slices.ContainsFunc(list, func(x TensorReport) bool { return x.Name == r.Name }) {
				list = append(list, r)
			}
		}
	}
	slices.SortFunc(list, func(a, b TensorReport) int { return strings.Compare(a.Name, b.Name) })
	b, err := CompressionJSON(CompressOptions{Method: method}, list)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "compression.json"), b, 0o644)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func convertedView(m *checkpoint.Model, e safetensors.Entry) (*tensors.Tensor, func(), error) {
	x, err := m.Tensor(e.Name)
	if err != nil {
		return nil, nil, err
	}
	c, err := x.ConvertTo(e.DType)
	return c, nil, err
}

// splitModule splits an output tensor name into its module and the field
// (".weight", ".bias", ".0.weight", ".1.weight", ".1.bias").
func splitModule(name string) (string, string) {
	for _, f := range []string{".0.weight", ".1.weight", ".1.bias", ".weight", ".bias"} {
		if m, ok := strings.CutSuffix(name, f); ok {
			return m, f
		}
	}
	return name, ""
}

// factorShapes returns the shapes of the two factors of a weight of the
// given shape at rank k: Linear [out, in] -> [k, in], [out, k]; a conv
// kernel [out, in, kh, kw] -> [k, in, kh, kw] (a conv to k channels) and
// [out, k, 1, 1] (a 1x1 conv).
func factorShapes(shape []int64, k int) ([]int64, []int64) {
	s0 := append([]int64{int64(k)}, shape[1:]...)
	s1 := []int64{shape[0], int64(k)}
	for range len(shape) - 2 {
		s1 = append(s1, 1)
	}
	return s0, s1
}

func findTargets(m *checkpoint.Model, o CompressOptions) ([]*target, error) {
	patterns := o.Targets
	explicit := len(patterns) > 0
	if !explicit {
		patterns = DefaultTargets
	}
	matched := make([]int, len(patterns))
	var out []*target
	for _, name := range m.Names() {
		info, _ := m.Info(name)
		hit := false
		for i, p := range patterns {
			if p.MatchString(name) {
				if len(info.Shape) >= 2 && info.DType.IsFloat() {
					matched[i]++
				}
				hit = true
			}
		}
		if !hit || len(info.Shape) < 2 || !info.DType.IsFloat() || !strings.HasSuffix(name, ".weight") {
			continue
		}
		if !explicit && excludedByDefault.MatchString(name) {
			continue
		}
		rows, cols, err := tensors.MatrixShape(info.Shape)
		if err != nil {
			return nil, err
		}
		t := &target{name: name, module: strings.TrimSuffix(name, ".weight"), shape: info.Shape, m: rows, n: cols, rule: o.Rule, dtype: info.DType}
		for _, ov := range o.Overrides {
			if ov.Pattern.MatchString(name) {
				t.rule = ov.Rule
				break
			}
		}
		k, fixed, err := t.rule.Fixed(rows, cols)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q %v: %w (choose the tensors with --target, or set its rank with --override)", m.Path, name, info.Shape, err)
		}
		if fixed {
			t.fixedRank = k
			t.dense = !SavesParameters(rows, cols, k)
		}
		if bi, ok := m.Info(t.module + ".bias"); ok && len(bi.Shape) == 1 && int(bi.Shape[0]) == rows {
			t.hasBias, t.biasDType = true, bi.DType
		}
		out = append(out, t)
	}
	for i, c := range matched {
		if explicit && c == 0 {
			return nil, fmt.Errorf("--target %q matches no floating weight of rank 2 or more in %s", patterns[i], m.Path)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no weight to factorise", m.Path)
	}
	return out, nil
}

// factorTarget loads one weight and factorises it with the chosen method.
func factorTarget(m *checkpoint.Model, t *target, o CompressOptions) (*Factorization, string, error) {
	x, err := m.Tensor(t.name)
	if err != nil {
		return nil, "", err
	}
	w, _, _, err := x.Matrix()
	m.Release(t.name)
	if err != nil {
		return nil, "", err
	}
	switch o.Method {
	case "svd":
		f, err := SVDFactorize(w, t.m, t.n, t.rule, o.SVD)
		return f, "", err
	case "fwsvd":
		fv, err := o.Fisher.Get(t.name)
		if err != nil {
			return nil, "", err
		}
		var imp []float64
		if o.PerRow {
			imp = fisher.PerOutput(fv, t.m, t.n)
		} else {
			imp = fisher.PerInput(fv, t.m, t.n)
		}
		f, err := FWSVD(w, t.m, t.n, imp, o.PerRow, t.rule, o.SVD)
		return f, "", err
	case "asvd":
		s, err := o.Stats.Module(t.module)
		if err != nil {
			return nil, "", err
		}
		if s.Dim != t.n {
			return nil, "", fmt.Errorf("statistics of module %q have %d input features, the weight has %d", t.module, s.Dim, t.n)
		}
		f, err := ASVD(w, t.m, t.n, s.MeanAbs(), o.Alpha, t.rule, o.SVD)
		return f, "", err
	case "whiten":
		s, err := o.Stats.Module(t.module)
		if err != nil {
			return nil, "", err
		}
		if s.Dim != t.n {
			return nil, "", fmt.Errorf("statistics of module %q have %d input features, the weight has %d", t.module, s.Dim, t.n)
		}
		f, shift, err := Whiten(w, t.m, t.n, s.Gram, t.rule, o.SVD)
		note := ""
		if shift > 0 {
			note = fmt.Sprintf("Gram not positive definite: diagonal shift %.3g", shift)
		}
		return f, note, err
	}
	return nil, "", fmt.Errorf("unknown method %q", o.Method)
}

// rankMetadata records, in a weight file's __metadata__, the rank of every
// factored module whose factors the file holds: {"wtool_ranks": "{\"M\": r}"}.
func rankMetadata(entries []safetensors.Entry) map[string]string {
	ranks := map[string]int64{}
	for _, e := range entries {
		if m, ok := strings.CutSuffix(e.Name, ".0.weight"); ok && len(e.Shape) > 0 {
			ranks[m] = e.Shape[0]
		}
	}
	if len(ranks) == 0 {
		return nil
	}
	b, _ := json.Marshal(ranks) // sorted keys
	return map[string]string{"wtool_ranks": string(b)}
}

// withCompressionMetadata records the method in __metadata__.
func withCompressionMetadata(md map[string]string, o CompressOptions) map[string]string {
	out := map[string]string{}
	for k, v := range md {
		out[k] = v
	}
	out["wtool_compression"] = o.Method
	return out
}

// CompressionJSON describes a factored checkpoint for the program that
// loads it: for each factored module its rank and original shape (and, for
// convolutions, the kernel), and the modules left dense.
func CompressionJSON(o CompressOptions, reports []TensorReport) ([]byte, error) {
	type mod struct {
		Rank     int     `json:"rank"`
		Shape    []int64 `json:"shape"`
		RelError float64 `json:"rel_error"`
		Energy   float64 `json:"energy"`
	}
	doc := struct {
		Format  string         `json:"format"`
		Method  string         `json:"method"`
		Layout  string         `json:"layout"`
		Modules map[string]mod `json:"modules"`
		Dense   []string       `json:"left_dense"`
	}{Format: "wtool-compression", Method: o.Method,
		Layout:  "module M: M.0.weight [rank, in(, kh, kw)] then M.1.weight [out, rank(, 1, 1)] and M.1.bias, i.e. nn.Sequential(Linear(in, rank, bias=False), Linear(rank, out))",
		Modules: map[string]mod{}, Dense: []string{}}
	for _, r := range reports {
		name := strings.TrimSuffix(r.Name, ".weight")
		if r.LeftDense {
			doc.Dense = append(doc.Dense, name)
			continue
		}
		doc.Modules[name] = mod{Rank: r.Rank, Shape: r.Shape, RelError: r.RelError, Energy: r.Energy}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	return append(b, '\n'), err
}
