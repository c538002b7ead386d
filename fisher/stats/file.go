package stats

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// tensor name suffixes, per kind (docs/stats.md)
var (
	singleFields = []string{"count", "sum", "abs_sum", "gram"}
	jointFields  = []string{"count", "sum_a", "sum_b", "abs_sum_a", "abs_sum_b", "gram_a", "gram_b", "cross"}
)

func fields(k Kind) []string {
	if k == Joint {
		return jointFields
	}
	return singleFields
}

// field returns the data of a module's field and its shape.
func (m *Module) field(name string) ([]float64, []int64) {
	vec, mat := []int64{int64(m.Dim)}, []int64{int64(m.Dim), int64(m.Dim)}
	switch name {
	case "sum", "sum_a":
		return m.Sum, vec
	case "abs_sum", "abs_sum_a":
		return m.Abs, vec
	case "gram", "gram_a":
		return m.Gram, mat
	case "sum_b":
		return m.SumB, vec
	case "abs_sum_b":
		return m.AbsB, vec
	case "gram_b":
		return m.GramB, mat
	case "cross":
		return m.Cross, mat
	}
	return nil, nil
}

func (m *Module) setField(name string, v []float64) {
	switch name {
	case "sum", "sum_a":
		m.Sum = v
	case "abs_sum", "abs_sum_a":
		m.Abs = v
	case "gram", "gram_a":
		m.Gram = v
	case "sum_b":
		m.SumB = v
	case "abs_sum_b":
		m.AbsB = v
	case "gram_b":
		m.GramB = v
	case "cross":
		m.Cross = v
	}
}

// Write writes s to path (a .safetensors file) in the wtool-stats format,
// atomically, with the refusals of checkpoint.Write (opts.Inputs, opts.Force).
func Write(ctx context.Context, path string, s *Stats, opts checkpoint.WriteOptions) error {
	if !checkpoint.IsSingleFile(path) {
		return fmt.Errorf("%s: a statistics file must end in .safetensors", path)
	}
	var entries []safetensors.Entry
	byName := map[string]func() *tensors.Tensor{}
	for _, m := range s.Modules {
		for _, f := range fields(s.Kind) {
			name := m.Name + "." + f
			if f == "count" {
				entries = append(entries, safetensors.Entry{Name: name, DType: tensors.I64, Shape: []int64{}})
				count := m.Count
				byName[name] = func() *tensors.Tensor {
					t := &tensors.Tensor{Name: name, DType: tensors.I64, Shape: []int64{}, Data: make([]byte, 8)}
					binary.LittleEndian.PutUint64(t.Data, uint64(count))
					return t
				}
				continue
			}
			data, shape := m.field(f)
			if want, _ := tensors.NumElements(shape); int64(len(data)) != want {
				return fmt.Errorf("module %q: field %s has %d values, want %d", m.Name, f, len(data), want)
			}
			entries = append(entries, safetensors.Entry{Name: name, DType: tensors.F64, Shape: shape})
			byName[name] = func() *tensors.Tensor {
				return f64Tensor(name, shape, data)
			}
		}
	}
	opts.Metadata = s.metadata()
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		return byName[e.Name](), nil, nil
	}
	_, err := checkpoint.Write(ctx, path, entries, produce, opts)
	return err
}

// File is an opened statistics file; modules are read on demand.
type File struct {
	Path    string
	Kind    Kind
	Samples int64
	Source  string
	modules []string
	m       *checkpoint.Model
	foreign bool // no wtool metadata: the layout was read from the names
}

// numeric reports whether a dtype holds numbers (a foreign file's count).
func numeric(dt tensors.DType) bool {
	switch dt {
	case tensors.I64, tensors.I32, tensors.I16, tensors.I8, tensors.U64, tensors.U32, tensors.U16, tensors.U8:
		return true
	}
	return dt.IsFloat()
}

// countOf decodes a count scalar of any numeric dtype.
func countOf(t *tensors.Tensor) (int64, error) {
	switch t.DType {
	case tensors.I64, tensors.U64:
		return int64(binary.LittleEndian.Uint64(t.Data)), nil
	case tensors.I32:
		return int64(int32(binary.LittleEndian.Uint32(t.Data))), nil
	case tensors.U32:
		return int64(binary.LittleEndian.Uint32(t.Data)), nil
	case tensors.I16:
		return int64(int16(binary.LittleEndian.Uint16(t.Data))), nil
	case tensors.U16:
		return int64(binary.LittleEndian.Uint16(t.Data)), nil
	case tensors.I8:
		return int64(int8(t.Data[0])), nil
	case tensors.U8:
		return int64(t.Data[0]), nil
	}
	v, err := t.Float64()
	if err != nil {
		return 0, err
	}
	if v[0] < 0 || v[0] != math.Trunc(v[0]) {
		return 0, fmt.Errorf("tensor %s: count %g is not a whole number", t.Name, v[0])
	}
	return int64(v[0]), nil
}

// Open opens a statistics file and checks its format, version and kind, and
// that every module listed has all its tensors with consistent shapes.
//
// A file without wtool's metadata (another tool's, or one a PyTorch loop
// saved) is accepted when its layout is unambiguous: every tensor is a
// module's field of docs/stats.md (M.count, M.sum, M.abs_sum, M.gram; or
// the joint fields), all of one kind, in any float dtype (count: any
// scalar number). Its modules are then taken in name order.
func Open(path string) (*File, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	md := m.Metadata()
	var f *File
	switch md["format"] {
	case Format:
		if md["version"] != Version {
			err = fmt.Errorf("%s: statistics file version %q is not supported (this wtool reads version %s)", path, md["version"], Version)
		} else {
			f, err = newFile(path, m)
		}
	case "", "pt":
		f, err = inferFile(path, m)
	default:
		err = fmt.Errorf("%s: not a wtool statistics file (__metadata__ format is %q, want %q)", path, md["format"], Format)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return f, nil
}

func newFile(path string, m *checkpoint.Model) (*File, error) {
	md := m.Metadata()
	f := &File{Path: path, Kind: Kind(md["kind"]), Source: md["source"], m: m}
	if f.Kind != Single && f.Kind != Joint {
		return nil, fmt.Errorf("%s: unknown statistics kind %q", path, md["kind"])
	}
	f.Samples, _ = strconv.ParseInt(md["samples"], 10, 64)
	if md["modules"] != "" {
		f.modules = strings.Split(md["modules"], ",")
	}
	for _, name := range f.modules {
		if err := f.checkModule(name); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// inferFile reads the layout of a statistics file without metadata from its
// tensor names.
func inferFile(path string, m *checkpoint.Model) (*File, error) {
	kinds := map[Kind]bool{}
	mods := map[string]bool{}
	all := append(slices.Clone(jointFields), singleFields[1:]...)
	slices.SortFunc(all, func(a, b string) int { return len(b) - len(a) }) // longest suffix first
	for _, n := range m.Names() {
		var fld string
		for _, c := range all {
			if strings.HasSuffix(n, "."+c) {
				fld = c
				break
			}
		}
		if fld == "" {
			return nil, fmt.Errorf("%s: not a wtool statistics file: no __metadata__, and tensor %q is not a module's statistic (M.count, M.sum, M.abs_sum, M.gram, or the joint fields of docs/stats.md)", path, n)
		}
		mods[strings.TrimSuffix(n, "."+fld)] = true
		inSingle, inJoint := slices.Contains(singleFields, fld), slices.Contains(jointFields, fld)
		if inSingle && !inJoint {
			kinds[Single] = true
		} else if inJoint && !inSingle {
			kinds[Joint] = true
		}
	}
	if len(kinds) != 1 || len(mods) == 0 {
		return nil, fmt.Errorf("%s: not a wtool statistics file: no __metadata__, and its tensors are not all of the single or all of the joint layout of docs/stats.md", path)
	}
	f := &File{Path: path, Source: "a statistics file without wtool metadata", m: m, foreign: true}
	for k := range kinds {
		f.Kind = k
	}
	f.modules = slices.Sorted(maps.Keys(mods))
	for _, name := range f.modules {
		if err := f.checkModule(name); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func (f *File) checkModule(name string) error {
	count, ok := f.m.Info(name + ".count")
	if !ok || len(count.Shape) != 0 || (count.DType != tensors.I64 && !(f.foreign && numeric(count.DType))) {
		return fmt.Errorf("%s: module %q: missing or malformed %s.count (I64 scalar)", f.Path, name, name)
	}
	dim := int64(-1)
	for _, fld := range fields(f.Kind)[1:] {
		info, ok := f.m.Info(name + "." + fld)
		if !ok {
			return fmt.Errorf("%s: module %q: tensor %s.%s is missing", f.Path, name, name, fld)
		}
		if (info.DType != tensors.F64 && !(f.foreign && info.DType.IsFloat())) || len(info.Shape) < 1 || len(info.Shape) > 2 {
			return fmt.Errorf("%s: tensor %s.%s: want F64 of rank 1 or 2, got %s%v", f.Path, name, fld, info.DType, info.Shape)
		}
		if dim < 0 {
			dim = info.Shape[0]
		}
		wantRank := 1
		if strings.HasPrefix(fld, "gram") || fld == "cross" {
			wantRank = 2
		}
		if len(info.Shape) != wantRank || slices.ContainsFunc(info.Shape, func(d int64) bool { return d != dim }) {
			return fmt.Errorf("%s: tensor %s.%s: shape %v, want %d dimension(s) of %d", f.Path, name, fld, info.Shape, wantRank, dim)
		}
	}
	return nil
}

// Modules returns the module names in forward order.
func (f *File) Modules() []string { return f.modules }

// Has reports whether the file has statistics for the module.
func (f *File) Has(name string) bool { return slices.Contains(f.modules, name) }

// Count reads only the named module's sample count.
func (f *File) Count(name string) (int64, error) {
	if !f.Has(name) {
		return 0, fmt.Errorf("%s: no statistics for module %q", f.Path, name)
	}
	ct, err := f.m.Tensor(name + ".count")
	if err != nil {
		return 0, err
	}
	return countOf(ct)
}

// Module reads the named module's statistics.
func (f *File) Module(name string) (*Module, error) {
	if !f.Has(name) {
		return nil, fmt.Errorf("%s: no statistics for module %q", f.Path, name)
	}
	ct, err := f.m.Tensor(name + ".count")
	if err != nil {
		return nil, err
	}
	count, err := countOf(ct)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	m := &Module{Name: name, Count: count}
	for _, fld := range fields(f.Kind)[1:] {
		t, err := f.m.Tensor(name + "." + fld)
		if err != nil {
			return nil, err
		}
		v, err := t.Float64()
		if err != nil {
			return nil, err
		}
		f.m.Release(t.Name)
		for i, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, fmt.Errorf("%s: tensor %s has a non-finite value at %d", f.Path, t.Name, i)
			}
		}
		m.Dim = int(t.Shape[0])
		m.setField(fld, v)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: module %q: %w", f.Path, name, err)
	}
	return m, nil
}

// check refuses statistics no data can produce: no samples, a negative
// sum of absolute values, a Gram matrix with a negative diagonal entry or a
// negative variance (sum x_i^2 < (sum x_i)^2 / count), or an asymmetric one.
func (m *Module) check() error {
	if m.Count <= 0 {
		return fmt.Errorf("count is %d: statistics need at least one sample", m.Count)
	}
	n := m.Dim
	for _, g := range []struct {
		name     string
		sum, abs []float64
		gram     []float64
	}{{"gram", m.Sum, m.Abs, m.Gram}, {"gram_b", m.SumB, m.AbsB, m.GramB}} {
		if g.gram == nil {
			continue
		}
		for i := range n {
			if g.abs != nil && g.abs[i] < 0 {
				return fmt.Errorf("the sum of absolute values of feature %d is negative (%g)", i, g.abs[i])
			}
			d := g.gram[i*n+i]
			if d < 0 {
				return fmt.Errorf("%s[%d,%d] = %g: a sum of squares cannot be negative", g.name, i, i, d)
			}
			if g.sum != nil {
				mean2 := g.sum[i] * g.sum[i] / float64(m.Count)
				if d < mean2-1e-9*max(mean2, d)-1e-300 {
					return fmt.Errorf("%s[%d,%d] = %g is smaller than sum^2/count = %g: feature %d would have a negative variance", g.name, i, i, d, mean2, i)
				}
			}
			if g.abs != nil && g.sum != nil && math.Abs(g.sum[i]) > g.abs[i]*(1+1e-9)+1e-300 {
				return fmt.Errorf("|sum| of feature %d (%g) exceeds its sum of absolute values (%g)", i, math.Abs(g.sum[i]), g.abs[i])
			}
			for j := range i {
				a, b := g.gram[i*n+j], g.gram[j*n+i]
				if math.Abs(a-b) > 1e-9*(math.Abs(a)+math.Abs(b))+1e-300 {
					return fmt.Errorf("%s is not symmetric: [%d,%d] = %g but [%d,%d] = %g", g.name, i, j, a, j, i, b)
				}
			}
		}
	}
	return nil
}

// Load reads every module into memory.
func (f *File) Load() (*Stats, error) {
	s := &Stats{Kind: f.Kind, Samples: f.Samples, Source: f.Source}
	for _, n := range f.modules {
		m, err := f.Module(n)
		if err != nil {
			return nil, err
		}
		s.Modules = append(s.Modules, m)
	}
	return s, nil
}

// Close releases the file.
func (f *File) Close() error { return f.m.Close() }

// Merge adds the statistics of b to a (more data of the same model): both
// must be of the same kind, with the same modules and dimensions.
func Merge(a, b *Stats) error {
	if a.Kind != b.Kind {
		return fmt.Errorf("cannot merge %s statistics with %s statistics", a.Kind, b.Kind)
	}
	if len(a.Modules) != len(b.Modules) {
		return fmt.Errorf("cannot merge statistics of %d modules with statistics of %d", len(a.Modules), len(b.Modules))
	}
	for i, ma := range a.Modules {
		mb := b.Modules[i]
		if ma.Name != mb.Name || ma.Dim != mb.Dim {
			return fmt.Errorf("module %d: %q (%d) vs %q (%d)", i, ma.Name, ma.Dim, mb.Name, mb.Dim)
		}
	}
	for i, ma := range a.Modules {
		mb := b.Modules[i]
		ma.Count += mb.Count
		for _, fld := range fields(a.Kind)[1:] {
			va, _ := ma.field(fld)
			vb, _ := mb.field(fld)
			for j := range va {
				va[j] += vb[j]
			}
		}
	}
	a.Samples += b.Samples
	return nil
}

// littleEndian is true on little-endian machines, where a []float64 is
// already the F64 encoding of safetensors.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// f64Tensor returns an F64 tensor of the values: a view of their memory on
// little-endian machines (a Gram matrix of 4608 features is 170 MB, not
// worth copying to write), an encoded copy elsewhere.
func f64Tensor(name string, shape []int64, v []float64) *tensors.Tensor {
	if littleEndian && len(v) > 0 {
		return &tensors.Tensor{Name: name, DType: tensors.F64, Shape: shape, Data: unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 8*len(v))}
	}
	t, _ := tensors.FromFloat64(name, tensors.F64, shape, v)
	return t
}
