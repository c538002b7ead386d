package nn

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Data is an evaluation or calibration set: images (a floating tensor
// [samples, C, H, W], or [samples, features] that the network's config
// gives the image shape of) or token sequences (an integer tensor
// [sequences, length]), with optional class labels. Samples are read
// batch by batch from the mapped file.
type Data struct {
	Path string // the file ("" in memory)
	Key  string // the tensor's name
	// N is the number of samples (images or sequences); Shape the shape of
	// one sample as stored.
	N     int
	Shape []int
	// Tokens is true for integer token ids.
	Tokens bool
	// Labels are class labels, one per sample (nil without).
	Labels []int

	m     *checkpoint.Model
	file  string
	dtype tensors.DType
	raw   []byte
	mem   []float32 // in memory: images
	ids   []int32   // in memory: tokens
}

// sampleSize is the number of values in one sample.
func (d *Data) sampleSize() int {
	s := 1
	for _, v := range d.Shape {
		s *= v
	}
	return s
}

// NewImages makes a data set of n images in memory, x holding n samples of
// the given shape ([C, H, W], or [features]) back to back; labels may be nil.
func NewImages(x []float32, n int, shape []int, labels []int) (*Data, error) {
	d := &Data{Key: "x", N: n, Shape: shape, mem: x, Labels: labels}
	if len(x) != n*d.sampleSize() {
		return nil, fmt.Errorf("%d values for %d samples of shape %v", len(x), n, shape)
	}
	if labels != nil && len(labels) != n {
		return nil, fmt.Errorf("%d labels for %d samples", len(labels), n)
	}
	return d, nil
}

// NewTokens makes a data set of n token sequences of length t in memory.
func NewTokens(ids []int32, n, t int) (*Data, error) {
	if len(ids) != n*t || t < 1 {
		return nil, fmt.Errorf("%d token ids for %d sequences of %d", len(ids), n, t)
	}
	return &Data{Key: "ids", N: n, Shape: []int{t}, Tokens: true, ids: ids}, nil
}

// OpenData opens a data set in a safetensors file: the tensor named key,
// or the file's only floating tensor of rank 2 or more (images, features),
// or else its only integer tensor of rank 2 (token ids). When the file also
// holds exactly one 1-D integer tensor (or labelsKey names one), it gives
// the labels; labelsKey "-" reads none.
func OpenData(path, key, labelsKey string) (*Data, error) {
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	d, err := openData(m, path, key, labelsKey)
	if err != nil {
		m.Close()
		return nil, err
	}
	return d, nil
}

func openData(m *checkpoint.Model, path, key, labelsKey string) (*Data, error) {
	if key == "" {
		var floats, ints []string
		for _, n := range m.Names() {
			info, _ := m.Info(n)
			switch {
			case info.DType.IsFloat() && len(info.Shape) >= 2:
				floats = append(floats, n)
			case isInt(info.DType) && len(info.Shape) == 2:
				ints = append(ints, n)
			}
		}
		switch {
		case len(floats) == 1:
			key = floats[0]
		case len(floats) == 0 && len(ints) == 1:
			key = ints[0]
		default:
			return nil, fmt.Errorf("%s: cannot tell which tensor holds the data (floating: %s; integer 2-D: %s); name it with --data-key",
				path, strings.Join(floats, ", "), strings.Join(ints, ", "))
		}
	}
	info, ok := m.Info(key)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", path, key)
	}
	d := &Data{Path: path, Key: key, m: m, file: info.File, dtype: info.DType}
	switch {
	case info.DType.IsFloat() && len(info.Shape) >= 2:
	case isInt(info.DType) && len(info.Shape) == 2:
		d.Tokens = true
	default:
		return nil, fmt.Errorf("%s: tensor %q is %s%v: data must be a floating tensor [samples, ...] or an integer tensor [sequences, length]", path, key, info.DType, info.Shape)
	}
	d.N = int(info.Shape[0])
	for _, s := range info.Shape[1:] {
		d.Shape = append(d.Shape, int(s))
	}
	if d.N == 0 || d.sampleSize() == 0 {
		return nil, fmt.Errorf("%s: tensor %q %v has no samples", path, key, info.Shape)
	}
	t, err := m.Tensor(key)
	if err != nil {
		return nil, err
	}
	d.raw = t.Data
	// labels: named, or the only 1-D integer tensor ("-": none)
	if labelsKey == "-" {
		return d, nil
	}
	if labelsKey == "" {
		var cands []string
		for _, n := range m.Names() {
			if li, _ := m.Info(n); isInt(li.DType) && len(li.Shape) == 1 {
				cands = append(cands, n)
			}
		}
		if len(cands) == 1 {
			labelsKey = cands[0]
		}
	}
	if labelsKey != "" {
		if d.Labels, err = readLabels(m, path, labelsKey); err != nil {
			return nil, err
		}
		if len(d.Labels) != d.N {
			return nil, fmt.Errorf("%s: %d labels (%q) for %d samples (%q)", path, len(d.Labels), labelsKey, d.N, key)
		}
	}
	return d, nil
}

// SetLabels reads the labels from another file (its tensor key, or its only
// 1-D integer tensor).
func (d *Data) SetLabels(path, key string) error {
	m, err := checkpoint.Open(path)
	if err != nil {
		return err
	}
	defer m.Close()
	if key == "" {
		var cands []string
		for _, n := range m.Names() {
			if li, _ := m.Info(n); isInt(li.DType) && len(li.Shape) == 1 {
				cands = append(cands, n)
			}
		}
		if len(cands) != 1 {
			return fmt.Errorf("%s: %d 1-D integer tensors (%s); name the labels with --labels-key", path, len(cands), strings.Join(cands, ", "))
		}
		key = cands[0]
	}
	l, err := readLabels(m, path, key)
	if err != nil {
		return err
	}
	if len(l) != d.N {
		return fmt.Errorf("%s: %d labels (%q) for %d samples", path, len(l), key, d.N)
	}
	d.Labels = l
	return nil
}

// Close releases the file.
func (d *Data) Close() error {
	if d.m == nil {
		return nil
	}
	return d.m.Close()
}

// batch is samples [lo, hi) of a data set, decoded.
type batch struct {
	lo, n   int
	x       []float32 // n images [C, H, W], back to back
	c, h, w int
	ids     []int32 // n sequences of t tokens
	t       int
	labels  []int
}

// read decodes samples [lo, hi) into b (its buffers reused), checking that
// image values are finite.
func (d *Data) read(b *batch, lo, hi int) error {
	b.lo, b.n = lo, hi-lo
	size := d.sampleSize()
	if d.Labels != nil {
		b.labels = d.Labels[lo:hi]
	} else {
		b.labels = nil
	}
	if d.Tokens {
		b.t = d.Shape[0]
		if d.ids != nil {
			b.ids = d.ids[lo*size : hi*size]
			return nil
		}
		if cap(b.ids) < b.n*size {
			b.ids = make([]int32, b.n*size)
		}
		b.ids = b.ids[:b.n*size]
		w := d.dtype.Bits() / 8
		src := d.raw[lo*size*w : hi*size*w]
		return safetensors.Guard(d.file, d.Key, func() error {
			for i := range b.ids {
				v, err := intAt(src[i*w:], d.dtype)
				if err != nil || v < 0 || v > math.MaxInt32 {
					return fmt.Errorf("%s: tensor %q: token id %d at sequence %d, position %d is out of range", d.Path, d.Key, v, lo+i/size, i%size)
				}
				b.ids[i] = int32(v)
			}
			return nil
		})
	}
	if d.mem != nil {
		b.x = d.mem[lo*size : hi*size]
	} else {
		if cap(b.x) < b.n*size {
			b.x = make([]float32, b.n*size)
		}
		b.x = b.x[:b.n*size]
		w := d.dtype.Bits() / 8
		err := safetensors.Guard(d.file, d.Key, func() error {
			return tensors.DecodeFloat32(b.x, d.raw[lo*size*w:hi*size*w], d.dtype)
		})
		if err != nil {
			return err
		}
	}
	for i, v := range b.x {
		if v != v || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%s: tensor %q: non-finite value %g in sample %d", d.Path, d.Key, v, lo+i/size)
		}
	}
	return nil
}

// imageShape resolves the image shape [C, H, W] of the data for a network.
func (d *Data) imageShape(in Input) (c, h, w int, err error) {
	if d.Tokens {
		return 0, 0, 0, fmt.Errorf("%s: tensor %q holds token ids; the model reads images", d.where(), d.Key)
	}
	switch len(d.Shape) {
	case 3:
		c, h, w = d.Shape[0], d.Shape[1], d.Shape[2]
		if in.Channels != 0 && c != in.Channels {
			return 0, 0, 0, fmt.Errorf("%s: tensor %q has %d channels per image; the model reads %d", d.where(), d.Key, c, in.Channels)
		}
		if in.Height != 0 && (h != in.Height || w != in.Width) {
			return 0, 0, 0, fmt.Errorf("%s: tensor %q has %dx%d images; the model reads %dx%d", d.where(), d.Key, h, w, in.Height, in.Width)
		}
		return c, h, w, nil
	case 1:
		if in.Channels == 0 || in.Height == 0 {
			return 0, 0, 0, fmt.Errorf("%s: tensor %q holds flat samples of %d features, and the model's config.json does not give the image shape (num_channels, image_size): store the images as [samples, C, H, W]", d.where(), d.Key, d.Shape[0])
		}
		if d.Shape[0] != in.Channels*in.Height*in.Width {
			return 0, 0, 0, fmt.Errorf("%s: tensor %q has %d features per sample; the model reads %dx%dx%d images", d.where(), d.Key, d.Shape[0], in.Channels, in.Height, in.Width)
		}
		return in.Channels, in.Height, in.Width, nil
	}
	return 0, 0, 0, fmt.Errorf("%s: tensor %q has samples of shape %v; images are [C, H, W] or flat", d.where(), d.Key, d.Shape)
}

func (d *Data) where() string {
	if d.Path == "" {
		return "data"
	}
	return d.Path
}

func isInt(d tensors.DType) bool {
	switch d {
	case tensors.I64, tensors.U64, tensors.I32, tensors.U32, tensors.I16, tensors.U16, tensors.I8, tensors.U8:
		return true
	}
	return false
}

func intAt(b []byte, dt tensors.DType) (int64, error) {
	le := binary.LittleEndian
	switch dt {
	case tensors.I64:
		return int64(le.Uint64(b)), nil
	case tensors.U64:
		u := le.Uint64(b)
		if u > math.MaxInt64 {
			return -1, fmt.Errorf("too large")
		}
		return int64(u), nil
	case tensors.I32:
		return int64(int32(le.Uint32(b))), nil
	case tensors.U32:
		return int64(le.Uint32(b)), nil
	case tensors.I16:
		return int64(int16(le.Uint16(b))), nil
	case tensors.U16:
		return int64(le.Uint16(b)), nil
	case tensors.I8:
		return int64(int8(b[0])), nil
	case tensors.U8:
		return int64(b[0]), nil
	}
	return -1, fmt.Errorf("not an integer dtype")
}

func readLabels(m *checkpoint.Model, path, key string) ([]int, error) {
	info, ok := m.Info(key)
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", path, key)
	}
	if len(info.Shape) != 1 || !isInt(info.DType) {
		return nil, fmt.Errorf("%s: tensor %q is %s%v; labels must be a 1-D integer tensor", path, key, info.DType, info.Shape)
	}
	t, err := m.Tensor(key)
	if err != nil {
		return nil, err
	}
	out := make([]int, info.Shape[0])
	w := info.DType.Bits() / 8
	err = safetensors.Guard(info.File, key, func() error {
		for i := range out {
			v, err := intAt(t.Data[i*w:], info.DType)
			if err != nil || v < 0 || v > math.MaxInt32 {
				return fmt.Errorf("%s: tensor %q: label %d at sample %d is out of range", path, key, v, i)
			}
			out[i] = int(v)
		}
		return nil
	})
	return out, err
}
