package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Entries returns the model's tensors as writer entries (same names, dtypes
// and shapes), in name order.
func (m *Model) Entries() []safetensors.Entry {
	out := make([]safetensors.Entry, 0, len(m.names))
	for i := range m.names {
		info := m.InfoAt(i)
		out = append(out, safetensors.Entry{Name: info.Name, DType: info.DType, Shape: info.Shape})
	}
	return out
}

// Passthrough returns a Producer that hands out the model's own tensors as
// zero-copy views, releasing their pages once written.
func (m *Model) Passthrough() Producer {
	return func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t, err := m.Tensor(e.Name)
		if err != nil {
			return nil, nil, err
		}
		m.Prefetch(e.Name)
		return t, func() { m.Release(e.Name) }, nil
	}
}

// DefaultWriteOptions fills in what a new model derived from m inherits
// unless opts says otherwise: m's __metadata__, its companion files (when
// writing a directory), and m's paths as inputs the output must not
// overwrite.
func (m *Model) DefaultWriteOptions(opts WriteOptions) (WriteOptions, error) {
	if opts.Metadata == nil {
		opts.Metadata = m.Metadata()
	}
	if opts.CopyFiles == nil {
		files, err := m.CompanionFiles()
		if err != nil {
			return opts, err
		}
		opts.CopyFiles = files
	}
	opts.Inputs = append(opts.Inputs, m.Path)
	opts.Inputs = append(opts.Inputs, m.Files()...)
	return opts, nil
}

// Convert writes a copy of m to out with every floating-point tensor (F64,
// F32, F16, BF16) converted to dtype, rounding to nearest even; other tensors
// (integers, booleans, FP8 and the other narrow float types) are copied
// byte-identical, as are floating tensors already of that type. A zero dtype
// converts nothing, which re-shards or re-lays-out a model.
func Convert(ctx context.Context, m *Model, out string, dtype tensors.DType, opts WriteOptions) (*Written, error) {
	if dtype != 0 && !dtype.IsFloat() {
		return nil, fmt.Errorf("cannot convert to %s: the target must be F32, F16, BF16 or F64", dtype)
	}
	opts, err := m.DefaultWriteOptions(opts)
	if err != nil {
		return nil, err
	}
	if opts, err = m.WithDType(opts, dtype); err != nil { // config.json's torch_dtype
		return nil, err
	}
	entries := m.Entries()
	for i := range entries {
		if dtype != 0 && entries[i].DType.IsFloat() {
			entries[i].DType = dtype
		}
	}
	pass := m.Passthrough()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		t, done, err := pass(ctx, e)
		if err != nil || t.DType == e.DType {
			return t, done, err
		}
		buf := tensors.Buffers.Get(int(t.NumElements()) * e.DType.Bits() / 8)
		err = tensors.Convert(buf, e.DType, t.Data, t.DType)
		done() // the converted copy no longer needs the input pages
		if err != nil {
			tensors.Buffers.Put(buf)
			return nil, nil, fmt.Errorf("%s: tensor %q: %w", m.Path, e.Name, err)
		}
		c := &tensors.Tensor{Name: e.Name, DType: e.DType, Shape: t.Shape, Data: buf}
		return c, func() { tensors.Buffers.Put(buf) }, nil
	}
	w, err := Write(ctx, out, entries, produce, opts)
	return w, ExplainNonFinite(err, m)
}

// ExplainNonFinite completes a *NonFiniteError (other errors are returned
// unchanged) with where the value comes from: one of models holds a NaN or
// Inf at that element of the same tensor (wtool copies no non-finite value
// without --allow-nonfinite), or the inputs are finite there and the value
// is an overflow of the output dtype.
func ExplainNonFinite(err error, models ...*Model) error {
	var nf *NonFiniteError
	if !errors.As(err, &nf) || nf.Detail != "" {
		return err
	}
	finiteIn := false
	for _, m := range models {
		if m == nil {
			continue
		}
		v, ok := m.element(nf.Tensor, nf.Index)
		if !ok {
			continue
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			info, _ := m.Info(nf.Tensor)
			nf.Detail = fmt.Sprintf("the input %s holds %g there; non-finite input values are not copied either", info.File, v)
			return err
		}
		finiteIn = true
	}
	if finiteIn {
		nf.ExplainOverflow()
	}
	return err
}

// element reads one element of a floating tensor as float64.
func (m *Model) element(name string, k int64) (float64, bool) {
	info, ok := m.Info(name)
	if !ok || !info.DType.IsFloat() {
		return 0, false
	}
	w := int64(info.DType.Bits() / 8)
	if k < 0 || (k+1)*w > info.Size {
		return 0, false
	}
	t, err := m.Tensor(name)
	if err != nil {
		return 0, false
	}
	var v [1]float64
	err = safetensors.Guard(info.File, name, func() error {
		return tensors.DecodeFloat64(v[:], t.Data[k*w:(k+1)*w], info.DType)
	})
	return v[0], err == nil
}
