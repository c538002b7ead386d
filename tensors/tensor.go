package tensors

import (
	"fmt"
	"slices"
)

// Tensor is a named n-dimensional array: its element type, its shape and its
// raw little-endian bytes in C order. Data may be a view into a memory-mapped
// file; treat it as read-only unless you allocated it.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// New returns a zero-filled tensor of the given type and shape.
func New(name string, dt DType, shape []int64) (*Tensor, error) {
	n, err := byteSize(dt, shape)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &Tensor{Name: name, DType: dt, Shape: slices.Clone(shape), Data: make([]byte, n)}, nil
}

func byteSize(dt DType, shape []int64) (int64, error) {
	if !dt.Valid() {
		return 0, fmt.Errorf("invalid dtype %d", dt)
	}
	n, ok := NumElements(shape)
	if !ok {
		return 0, fmt.Errorf("shape %v: invalid or overflowing element count", shape)
	}
	b, err := dt.ByteSize(uint64(n))
	if err != nil {
		return 0, err
	}
	return int64(b), nil
}

// ByteSize returns the number of bytes a tensor of type dt and the given shape
// occupies, or an error for negative, overflowing or sub-byte sizes.
func ByteSize(dt DType, shape []int64) (int64, error) { return byteSize(dt, shape) }

// NumElements returns the number of elements (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n, _ := NumElements(t.Shape)
	return n
}

// Validate checks that Data has exactly the size the type and shape call for.
func (t *Tensor) Validate() error {
	n, err := byteSize(t.DType, t.Shape)
	if err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	if n != int64(len(t.Data)) {
		return fmt.Errorf("%s: %s%v needs %d bytes, has %d", t.Name, t.DType, t.Shape, n, len(t.Data))
	}
	return nil
}

// Float32 decodes the tensor's values into a new float32 slice. It fails for
// types other than F64, F32, F16 and BF16.
func (t *Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.NumElements())
	if err := DecodeFloat32(out, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return out, nil
}

// Float64 decodes the tensor's values into a new float64 slice.
func (t *Tensor) Float64() ([]float64, error) {
	out := make([]float64, t.NumElements())
	if err := DecodeFloat64(out, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return out, nil
}

// FromFloat32 encodes values as a new tensor of type dt (F64, F32, F16 or
// BF16) and the given shape, rounding to nearest even.
func FromFloat32(name string, dt DType, shape []int64, values []float32) (*Tensor, error) {
	t, err := New(name, dt, shape)
	if err != nil {
		return nil, err
	}
	if int64(len(values)) != t.NumElements() {
		return nil, fmt.Errorf("%s: %d values for shape %v", name, len(values), shape)
	}
	if err := EncodeFloat32(t.Data, values, dt); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// FromFloat64 encodes values as a new tensor of type dt, rounding once to
// nearest even.
func FromFloat64(name string, dt DType, shape []int64, values []float64) (*Tensor, error) {
	t, err := New(name, dt, shape)
	if err != nil {
		return nil, err
	}
	if int64(len(values)) != t.NumElements() {
		return nil, fmt.Errorf("%s: %d values for shape %v", name, len(values), shape)
	}
	if err := EncodeFloat64(t.Data, values, dt); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// ConvertTo returns the tensor converted to type dt. Floating tensors are
// converted (rounding to nearest even); a tensor already of type dt is
// returned as is; any other type is an error: integers, booleans and the
// 4/6/8-bit float types are never converted silently.
func (t *Tensor) ConvertTo(dt DType) (*Tensor, error) {
	if t.DType == dt {
		return t, nil
	}
	out, err := New(t.Name, dt, t.Shape)
	if err != nil {
		return nil, err
	}
	if err := Convert(out.Data, dt, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("%s: %w", t.Name, err)
	}
	return out, nil
}

// MatrixShape returns the 2-D (rows, cols) view of a shape: its first axis
// by the product of the others, (out, in) for a Linear weight and
// (out, in*kh*kw) for a convolution kernel. It knows nothing of the module:
// a GPT-2 Conv1D weight is [in, out] and an embedding [num, dim]; the
// matrix of a module in its own orientation [out, in] comes from io/arch
// (Module.Matrix, arch.ToMatrix). Tensors of rank 0 or 1 have no matrix view.
func MatrixShape(shape []int64) (rows, cols int, err error) {
	if len(shape) < 2 {
		return 0, 0, fmt.Errorf("shape %v has no matrix view (rank %d < 2)", shape, len(shape))
	}
	n, ok := NumElements(shape[1:])
	if !ok || shape[0] < 0 {
		return 0, 0, fmt.Errorf("shape %v: invalid dimensions", shape)
	}
	return int(shape[0]), int(n), nil
}

// Matrix decodes a tensor of rank >= 2 as a row-major float32 matrix of
// MatrixShape(t.Shape). Reshape the result back with FromFloat32 and the
// original shape.
func (t *Tensor) Matrix() (data []float32, rows, cols int, err error) {
	rows, cols, err = MatrixShape(t.Shape)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", t.Name, err)
	}
	data, err = t.Float32()
	return data, rows, cols, err
}

// MatrixFloat64 is Matrix with float64 values.
func (t *Tensor) MatrixFloat64() (data []float64, rows, cols int, err error) {
	rows, cols, err = MatrixShape(t.Shape)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", t.Name, err)
	}
	data, err = t.Float64()
	return data, rows, cols, err
}
