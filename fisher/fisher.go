// Package fisher reads, writes, checks, combines and reduces diagonal Fisher
// information files (the wtool-fisher format of docs/stats.md): one float32
// tensor per model parameter, same name and shape, holding the mean over
// batches of the squared gradient of the batch's mean cross-entropy loss.
//
// Subpackages compute the data-dependent information wtool's operators need:
// fisher/stats accumulates and stores layer-input statistics (Gram matrices),
// fisher/mlp is a built-in engine that runs plain MLP checkpoints forward and
// backward to produce both.
package fisher

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Format and Version identify wtool-fisher files in __metadata__.
const (
	Format  = "wtool-fisher"
	Version = "1"
)

// Meta is what a Fisher file records about how it was computed.
type Meta struct {
	Batches   int64   // number of batches averaged
	BatchSize int64   // size of the batches (the last may be smaller)
	Samples   int64   // number of samples
	Loss      float64 // mean of the batch losses
	Source    string  // free text: the writer and the model
}

func (m Meta) metadata() map[string]string {
	return map[string]string{
		"format": Format, "version": Version,
		"batches": strconv.FormatInt(m.Batches, 10), "batch_size": strconv.FormatInt(m.BatchSize, 10),
		"samples": strconv.FormatInt(m.Samples, 10), "loss": strconv.FormatFloat(m.Loss, 'g', -1, 64),
		"source": m.Source,
	}
}

// Write writes Fisher tensors (converted to F32) to path, a .safetensors
// file, atomically and with the refusals of checkpoint.Write.
func Write(ctx context.Context, path string, ts []*tensors.Tensor, meta Meta, opts checkpoint.WriteOptions) error {
	if !checkpoint.IsSingleFile(path) {
		return fmt.Errorf("%s: a Fisher file must end in .safetensors", path)
	}
	entries := make([]safetensors.Entry, len(ts))
	byName := make(map[string]*tensors.Tensor, len(ts))
	for i, t := range ts {
		entries[i] = safetensors.Entry{Name: t.Name, DType: tensors.F32, Shape: t.Shape}
		byName[t.Name] = t
	}
	opts.Metadata = meta.metadata()
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t, err := byName[e.Name].ConvertTo(tensors.F32)
		return t, nil, err
	}
	_, err := checkpoint.Write(ctx, path, entries, produce, opts)
	return err
}

// File is an opened Fisher file.
type File struct {
	Path string
	Meta Meta
	// Foreign is set for a file without wtool's metadata (written by
	// another tool); its Meta is empty.
	Foreign bool
	m       *checkpoint.Model
}

// Open opens a Fisher file and checks its format, version and dtypes.
//
// Files other tools write are accepted too: a plain safetensors file (no
// __metadata__ format, or PyTorch's "pt") with one floating tensor, of any
// float dtype, per parameter, named and shaped like the parameter — what
// FWSVD scripts and a five-line PyTorch loop save. Such a file is Foreign;
// CheckAgainst then decides whether it belongs to the model (every tensor's
// name and shape must match; a mismatch is refused, naming the tensor).
func Open(path string) (*File, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	md := m.Metadata()
	foreign := false
	switch md["format"] {
	case Format:
		if md["version"] != Version {
			m.Close()
			return nil, fmt.Errorf("%s: Fisher file version %q is not supported (this wtool reads version %s)", path, md["version"], Version)
		}
	case "", "pt":
		foreign = true
	default:
		m.Close()
		return nil, fmt.Errorf("%s: not a Fisher file (__metadata__ format is %q; want %q, or a plain safetensors file of one tensor per parameter)", path, md["format"], Format)
	}
	f, err := newFile(path, m)
	if err != nil {
		m.Close()
		return nil, err
	}
	if f.Foreign = foreign; foreign {
		f.Meta.Source = "a Fisher file without wtool metadata"
	}
	return f, nil
}

func newFile(path string, m *checkpoint.Model) (*File, error) {
	md := m.Metadata()
	f := &File{Path: path, m: m}
	f.Meta.Batches, _ = strconv.ParseInt(md["batches"], 10, 64)
	f.Meta.BatchSize, _ = strconv.ParseInt(md["batch_size"], 10, 64)
	f.Meta.Samples, _ = strconv.ParseInt(md["samples"], 10, 64)
	f.Meta.Loss, _ = strconv.ParseFloat(md["loss"], 64)
	f.Meta.Source = md["source"]
	for _, n := range m.Names() {
		if info, _ := m.Info(n); !info.DType.IsFloat() {
			return nil, fmt.Errorf("%s: tensor %q is %s; Fisher values must be floating point", path, n, info.DType)
		}
	}
	return f, nil
}

// Names returns the tensors the file has Fisher information for.
func (f *File) Names() []string { return f.m.Names() }

// Has reports whether the file has Fisher information for the tensor.
func (f *File) Has(name string) bool { return f.m.Has(name) }

// CheckAgainst verifies that the file belongs to model: every tensor it
// holds exists in the model with the same shape. The error names the first
// tensor that differs.
func (f *File) CheckAgainst(model *checkpoint.Model) error {
	for _, n := range f.m.Names() {
		fi, _ := f.m.Info(n)
		mi, ok := model.Info(n)
		if !ok {
			return fmt.Errorf("%s: tensor %q is not in the model %s: the Fisher file belongs to another model", f.Path, n, model.Path)
		}
		if !slices.Equal(fi.Shape, mi.Shape) {
			return fmt.Errorf("%s: tensor %q has shape %v, the model %s has %v: the Fisher file belongs to another model", f.Path, n, fi.Shape, model.Path, mi.Shape)
		}
	}
	return nil
}

// Get returns the named tensor's Fisher values, checked finite and
// non-negative.
func (f *File) Get(name string) ([]float32, error) {
	t, err := f.m.Tensor(name)
	if err != nil {
		return nil, err
	}
	v, err := t.Float32()
	f.m.Release(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	for i, x := range v {
		if !(x >= 0) || math.IsInf(float64(x), 1) {
			return nil, fmt.Errorf("%s: tensor %q: Fisher value %g at index %d (must be finite and non-negative)", f.Path, name, x, i)
		}
	}
	return v, nil
}

// Shape returns the shape of the named tensor.
func (f *File) Shape(name string) ([]int64, bool) {
	info, ok := f.m.Info(name)
	return info.Shape, ok
}

// Close releases the file.
func (f *File) Close() error { return f.m.Close() }

// Combine writes to out the elementwise sum (or, with average, the mean) of
// several Fisher files of the same model, tensor by tensor. All files must
// hold the same tensors with the same shapes.
func Combine(ctx context.Context, paths []string, out string, average bool, opts checkpoint.WriteOptions) error {
	if len(paths) == 0 {
		return fmt.Errorf("no Fisher files to combine")
	}
	files := make([]*File, len(paths))
	for i, p := range paths {
		f, err := Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		files[i] = f
		opts.Inputs = append(opts.Inputs, p)
	}
	first := files[0]
	var meta Meta
	for _, f := range files {
		if !slices.Equal(f.Names(), first.Names()) {
			return fmt.Errorf("%s and %s hold different tensors", first.Path, f.Path)
		}
		for _, n := range first.Names() {
			a, _ := first.Shape(n)
			b, _ := f.Shape(n)
			if !slices.Equal(a, b) {
				return fmt.Errorf("tensor %q: shape %v in %s, %v in %s", n, a, first.Path, b, f.Path)
			}
		}
		meta.Batches += f.Meta.Batches
		meta.Samples += f.Meta.Samples
		meta.Loss += f.Meta.Loss * float64(f.Meta.Batches)
	}
	if meta.Batches > 0 {
		meta.Loss /= float64(meta.Batches)
	}
	meta.BatchSize = first.Meta.BatchSize
	meta.Source = "wtool fisher.Combine"
	entries := make([]safetensors.Entry, 0, len(first.Names()))
	for _, n := range first.Names() {
		shape, _ := first.Shape(n)
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: shape})
	}
	opts.Metadata = meta.metadata()
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		var acc []float32
		for _, f := range files {
			v, err := f.Get(e.Name)
			if err != nil {
				return nil, nil, err
			}
			if acc == nil {
				acc = v
			} else {
				Add(acc, v)
			}
		}
		if average {
			Scale(acc, 1/float32(len(files)))
		}
		t, err := tensors.FromFloat32(e.Name, tensors.F32, e.Shape, acc)
		return t, nil, err
	}
	_, err := checkpoint.Write(ctx, out, entries, produce, opts)
	return err
}

// Add adds src to dst elementwise.
func Add(dst, src []float32) {
	for i, v := range src[:len(dst)] {
		dst[i] += v
	}
}

// Scale multiplies v by s.
func Scale(v []float32, s float32) {
	for i := range v {
		v[i] *= s
	}
}

// PerInput reduces the Fisher of a weight matrix (rows x cols, row-major, a
// Linear weight [out, in] or a conv kernel viewed as [out, in*kh*kw]) to one
// importance per input feature: the sum over rows, accumulated in float64.
// FWSVD scales the weight's columns by the square roots of these.
func PerInput(f []float32, rows, cols int) []float64 {
	out := make([]float64, cols)
	for r := range rows {
		for c, v := range f[r*cols : (r+1)*cols] {
			out[c] += float64(v)
		}
	}
	return out
}

// PerOutput reduces the Fisher of a weight matrix to one importance per output
// row: the sum over columns.
func PerOutput(f []float32, rows, cols int) []float64 {
	out := make([]float64, rows)
	for r := range rows {
		var s float64
		for _, v := range f[r*cols : (r+1)*cols] {
			s += float64(v)
		}
		out[r] = s
	}
	return out
}
