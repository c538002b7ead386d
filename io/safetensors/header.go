package safetensors

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"unicode/utf8"

	"github.com/wtool/wtool/tensors"
)

// MaxHeaderSize is the largest header the format allows (the reference
// implementation's limit), which also bounds the memory a header read takes.
const MaxHeaderSize = 100_000_000

// TensorInfo describes one tensor of a file: its name, element type, shape
// and the [Begin, End) byte range of its data relative to the start of the
// data section.
type TensorInfo struct {
	Name  string
	DType tensors.DType
	Shape []int64
	Begin int64
	End   int64
}

// Size returns the tensor's size in bytes.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// NumElements returns the number of elements (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n, _ := tensors.NumElements(t.Shape)
	return n
}

// Header is a validated safetensors header.
type Header struct {
	// Metadata is the __metadata__ map; nil when the file has none.
	Metadata map[string]string
	// Tensors in the order of their data in the file.
	Tensors []TensorInfo
	// HeaderSize is N, the length of the JSON header including padding.
	HeaderSize int64
	// DataOffset is 8+N, where the data section starts in the file.
	DataOffset int64
	// DataSize is the length of the data section.
	DataSize int64

	index map[string]int
}

// Lookup returns the tensor with the given name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	i, ok := h.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

// Names returns the tensor names in ascending order.
func (h *Header) Names() []string {
	names := make([]string, len(h.Tensors))
	for i, t := range h.Tensors {
		names[i] = t.Name
	}
	slices.Sort(names)
	return names
}

// FileSize returns the size the whole file has: 8 + N + data.
func (h *Header) FileSize() int64 { return h.DataOffset + h.DataSize }

// ReadHeader reads and validates the header of a safetensors file of the given
// size through r, reading only the 8-byte prefix and the N header bytes, never
// the tensor data. It performs every check of the reference implementation in
// its order (so the same file fails with the same kind of error), then the
// stricter checks of this package. The data extents are checked against size.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	return ReadHeaderContext(context.Background(), r, size)
}

// ReadHeaderContext is ReadHeader that stops with ctx's error when ctx is
// done (a header can describe a million tensors).
func ReadHeaderContext(ctx context.Context, r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, &Error{Kind: ErrHeaderTooSmall, Detail: fmt.Sprintf("file has %d bytes, the length prefix needs 8", size)}
	}
	var prefix [8]byte
	if m, err := r.ReadAt(prefix[:], 0); m < len(prefix) {
		return nil, fmt.Errorf("reading the header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxHeaderSize {
		return nil, &Error{Kind: ErrHeaderTooLarge, Detail: fmt.Sprintf("declared length %d exceeds the limit of %d bytes", n, MaxHeaderSize)}
	}
	if int64(n) > size-8 {
		return nil, &Error{Kind: ErrInvalidHeaderLength, Detail: fmt.Sprintf("declared header of %d bytes runs past the end of a %d-byte file", n, size)}
	}
	buf := make([]byte, n)
	if m, err := r.ReadAt(buf, 8); m < len(buf) {
		return nil, fmt.Errorf("reading the header: %w", err)
	}
	return parseHeader(ctx, buf, size)
}

// ParseHeader validates the header of a whole safetensors file held in memory
// (for example a memory-mapped file). It is ReadHeader over b.
func ParseHeader(b []byte) (*Header, error) {
	return ReadHeader(bytesReaderAt(b), int64(len(b)))
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func parseHeader(ctx context.Context, buf []byte, fileSize int64) (*Header, error) {
	if !utf8.Valid(buf) {
		i := 0
		for i < len(buf) {
			r, w := utf8.DecodeRune(buf[i:])
			if r == utf8.RuneError && w <= 1 {
				break
			}
			i += w
		}
		return nil, &Error{Kind: ErrInvalidHeader, Detail: fmt.Sprintf("invalid byte %#02x at byte %d of the header", buf[i], i)}
	}
	raw, err := parseHeaderJSON(ctx, buf)
	if err != nil {
		return nil, err
	}
	delete(raw.names, "__metadata__")
	// The reference sorts tensors by their offsets before validating; names
	// break ties so that errors do not depend on map order.
	slices.SortFunc(raw.tensors, func(a, b rawTensor) int {
		if c := cmp.Compare(a.offsets[0], b.offsets[0]); c != 0 {
			return c
		}
		if c := cmp.Compare(a.offsets[1], b.offsets[1]); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	h := &Header{
		HeaderSize: int64(len(buf)),
		DataOffset: 8 + int64(len(buf)),
		Tensors:    make([]TensorInfo, len(raw.tensors)),
		index:      raw.names, // reused: the positions are set below
	}
	if raw.hasMetadata {
		h.Metadata = raw.metadata
	}
	var end uint64
	for i, t := range raw.tensors {
		if i%65536 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		begin, stop := t.offsets[0], t.offsets[1]
		if begin != end || stop < begin {
			detail := fmt.Sprintf("data_offsets [%d, %d] but the previous tensor ends at %d", begin, stop, end)
			if stop < begin {
				detail = fmt.Sprintf("data_offsets [%d, %d] end before they begin", begin, stop)
			}
			return nil, &Error{Tensor: t.name, Kind: ErrInvalidOffset, Detail: detail}
		}
		end = stop
		nelem := uint64(1)
		for _, sd := range t.shape {
			d := uint64(sd)
			hi, lo := bits.Mul64(nelem, d)
			if hi != 0 {
				return nil, &Error{Tensor: t.name, Kind: ErrValidationOverflow, Detail: "shape " + unsignedShape(t.shape)}
			}
			nelem = lo
		}
		hi, nbits := bits.Mul64(nelem, uint64(t.dtype.Bits()))
		if hi != 0 {
			return nil, &Error{Tensor: t.name, Kind: ErrValidationOverflow, Detail: fmt.Sprintf("%d elements of %s", nelem, t.dtype)}
		}
		if nbits%8 != 0 {
			return nil, &Error{Tensor: t.name, Kind: ErrMisalignedSlice, Detail: fmt.Sprintf("%d elements of %s are %d bits", nelem, t.dtype, nbits)}
		}
		if stop-begin != nbits/8 {
			return nil, &Error{Tensor: t.name, Kind: ErrTensorInvalidInfo,
				Detail: fmt.Sprintf("%s%s needs %d bytes but data_offsets [%d, %d] span %d", t.dtype, unsignedShape(t.shape), nbits/8, begin, stop, stop-begin)}
		}
		for _, d := range t.shape {
			if d < 0 { // above 2^63-1: only possible beside a zero dimension
				return nil, &Error{Tensor: t.name, Kind: ErrValidationOverflow, Detail: fmt.Sprintf("dimension %d exceeds 2^63-1", uint64(d))}
			}
		}
		shape := t.shape
		// offsets are converted once the total is known to fit the file
		h.Tensors[i] = TensorInfo{Name: t.name, DType: t.dtype, Shape: shape}
		h.index[t.name] = i
	}
	if want := uint64(fileSize - h.DataOffset); end != want {
		detail := fmt.Sprintf("the tensors end at data byte %d but the file has %d data bytes (trailing bytes)", end, want)
		if end > want {
			detail = fmt.Sprintf("the tensors need %d data bytes but the file has only %d (truncated)", end, want)
		}
		return nil, &Error{Kind: ErrMetadataIncompleteBuffer, Detail: detail}
	}
	h.DataSize = int64(end)
	for i, t := range raw.tensors {
		h.Tensors[i].Begin, h.Tensors[i].End = int64(t.offsets[0]), int64(t.offsets[1])
	}
	return h, nil
}

// unsignedShape formats a raw shape, whose values are unsigned.
func unsignedShape(s []int64) string {
	u := make([]uint64, len(s))
	for i, d := range s {
		u[i] = uint64(d)
	}
	return fmt.Sprint(u)
}
