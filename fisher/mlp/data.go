package mlp

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// Inputs is a calibration set: a 2-D floating tensor [samples, features] in
// a safetensors file, read batch by batch from the mapped file.
type Inputs struct {
	Path     string
	Key      string // tensor name
	Samples  int
	Features int

	m     *checkpoint.Model
	dtype tensors.DType
	data  []byte
}

// OpenInputs opens the calibration tensor of a safetensors file: the one
// named key, or, with key "", the file's only 2-D floating tensor.
func OpenInputs(path, key string) (*Inputs, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	in, err := openInputs(m, path, key)
	if err != nil {
		m.Close()
		return nil, err
	}
	return in, nil
}

func openInputs(m *checkpoint.Model, path, key string) (*Inputs, error) {
	if key == "" {
		var cands []string
		for _, n := range m.Names() {
			if info, _ := m.Info(n); len(info.Shape) == 2 && info.DType.IsFloat() {
				cands = append(cands, n)
			}
		}
		if len(cands) != 1 {
			return nil, fmt.Errorf("%s: %d 2-D floating tensors (%s); name the calibration inputs with --calib-key", path, len(cands), strings.Join(cands, ", "))
		}
		key = cands[0]
	}
	info, ok := m.Info(key)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", path, key)
	}
	if len(info.Shape) != 2 || !info.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q is %s%v; calibration inputs must be a 2-D floating tensor [samples, features]", path, key, info.DType, info.Shape)
	}
	t, err := m.Tensor(key)
	if err != nil {
		return nil, err
	}
	return &Inputs{Path: path, Key: key, Samples: int(info.Shape[0]), Features: int(info.Shape[1]), m: m, dtype: info.DType, data: t.Data}, nil
}

// Batch decodes samples [lo, hi) into dst (grown as needed) and checks that
// every value is finite.
func (in *Inputs) Batch(dst []float32, lo, hi int) ([]float32, error) {
	n := (hi - lo) * in.Features
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	w := in.dtype.Bits() / 8
	if err := tensors.DecodeFloat32(dst, in.data[lo*in.Features*w:hi*in.Features*w], in.dtype); err != nil {
		return nil, err
	}
	for i, v := range dst {
		if v != v || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%s: tensor %q: non-finite value %g at sample %d, feature %d", in.Path, in.Key, v, lo+i/in.Features, i%in.Features)
		}
	}
	in.m.Release(in.Key)
	return dst, nil
}

// Close releases the file.
func (in *Inputs) Close() error { return in.m.Close() }

// ReadLabels reads integer class labels: the tensor named key or, with key
// "", the file's only 1-D integer tensor.
func ReadLabels(path, key string) ([]int, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if key == "" {
		var cands []string
		for _, n := range m.Names() {
			if info, _ := m.Info(n); len(info.Shape) == 1 && isInt(info.DType) {
				cands = append(cands, n)
			}
		}
		if len(cands) != 1 {
			return nil, fmt.Errorf("%s: %d 1-D integer tensors (%s); name the labels with --labels-key", path, len(cands), strings.Join(cands, ", "))
		}
		key = cands[0]
	}
	t, err := m.Tensor(key)
	if err != nil {
		return nil, err
	}
	if len(t.Shape) != 1 || !isInt(t.DType) {
		return nil, fmt.Errorf("%s: tensor %q is %s%v; labels must be a 1-D integer tensor", path, key, t.DType, t.Shape)
	}
	n := int(t.Shape[0])
	out := make([]int, n)
	w := t.DType.Bits() / 8
	le := binary.LittleEndian
	for i := range out {
		b := t.Data[i*w:]
		var v int64
		switch t.DType {
		case tensors.I64:
			v = int64(le.Uint64(b))
		case tensors.U64:
			u := le.Uint64(b)
			if u > math.MaxInt64 {
				return nil, fmt.Errorf("%s: tensor %q: label %d at sample %d is too large", path, key, u, i)
			}
			v = int64(u)
		case tensors.I32:
			v = int64(int32(le.Uint32(b)))
		case tensors.U32:
			v = int64(le.Uint32(b))
		case tensors.I16:
			v = int64(int16(le.Uint16(b)))
		case tensors.U16:
			v = int64(le.Uint16(b))
		case tensors.I8:
			v = int64(int8(b[0]))
		case tensors.U8:
			v = int64(b[0])
		}
		if v < 0 || v > math.MaxInt32 {
			return nil, fmt.Errorf("%s: tensor %q: label %d at sample %d is out of range", path, key, v, i)
		}
		out[i] = int(v)
	}
	return out, nil
}

func isInt(d tensors.DType) bool {
	switch d {
	case tensors.I64, tensors.U64, tensors.I32, tensors.U32, tensors.I16, tensors.U16, tensors.I8, tensors.U8:
		return true
	}
	return false
}
