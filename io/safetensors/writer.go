package safetensors

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/tensors"
)

// Entry declares a tensor that a Writer will write.
type Entry struct {
	Name  string
	DType tensors.DType
	Shape []int64
	// Bounded marks Shape as an upper bound of each dimension: the tensor
	// passed to Write may be smaller (a rank chosen only after an SVD, say).
	// A file with bounded entries gets its header written last, padded with
	// spaces to the length reserved for the bounds.
	Bounded bool
	// Optional marks a tensor the producer may decide not to write (Skip);
	// like Bounded, it makes the header be written last.
	Optional bool
}

// SortEntries orders entries as the reference writer lays tensors out: by
// dtype, descending in the enum order (so 8-byte types come first and stay
// aligned), then by name ascending.
func SortEntries(entries []Entry) {
	slices.SortStableFunc(entries, func(a, b Entry) int {
		if c := cmp.Compare(b.DType, a.DType); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// checkEntries validates names, types and shapes and returns the byte size of
// each entry.
func checkEntries(entries []Entry) ([]int64, error) {
	sizes := make([]int64, len(entries))
	seen := make(map[string]bool, len(entries))
	for i, e := range entries {
		switch {
		case e.Name == "__metadata__":
			return nil, &Error{Tensor: e.Name, Kind: ErrReservedName}
		case !utf8.ValidString(e.Name):
			return nil, fmt.Errorf("tensor name %q is not valid UTF-8", e.Name)
		case seen[e.Name]:
			return nil, &Error{Tensor: e.Name, Kind: ErrDuplicateKey}
		case !e.DType.Valid():
			return nil, fmt.Errorf("tensor %q: invalid dtype %d", e.Name, e.DType)
		}
		seen[e.Name] = true
		n, err := tensors.ByteSize(e.DType, e.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", e.Name, err)
		}
		sizes[i] = n
	}
	return sizes, nil
}

// appendHeader appends the JSON header the reference writer produces for
// entries (already in file order) with the given sizes: compact JSON,
// __metadata__ first (keys sorted, for reproducible files), then each tensor
// as {"dtype":..,"shape":[..],"data_offsets":[b,e]}.
func appendHeader(b []byte, entries []Entry, shapes [][]int64, sizes []int64, metadata map[string]string) []byte {
	b = append(b, '{')
	first := true
	if metadata != nil {
		b = append(b, `"__metadata__":{`...)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, metadata[k])
		}
		b = append(b, '}')
		first = false
	}
	var off int64
	for i, e := range entries {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, e.Name)
		b = append(b, `:{"dtype":"`...)
		b = append(b, e.DType.String()...)
		b = append(b, `","shape":[`...)
		for j, d := range shapes[i] {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendInt(b, off, 10)
		b = append(b, ',')
		off += sizes[i]
		b = strconv.AppendInt(b, off, 10)
		b = append(b, "]}"...)
	}
	return append(b, '}')
}

// pad8 pads a header with spaces to a multiple of 8 bytes.
func pad8(h []byte, atLeast int) []byte {
	n := max(len(h), atLeast)
	n = (n + 7) &^ 7
	for len(h) < n {
		h = append(h, ' ')
	}
	return h
}

func metadataOK(metadata map[string]string) error {
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("__metadata__ entry %q is not valid UTF-8", k)
		}
	}
	return nil
}

// Encode writes a complete safetensors file holding ts to w, laid out exactly
// as the reference implementation lays it out (tensor order, offsets, JSON,
// padding). It keeps everything in memory; use Create for large files.
// Unlike Writer, it does not refuse non-finite values.
func Encode(w io.Writer, ts []*tensors.Tensor, metadata map[string]string) error {
	entries := make([]Entry, len(ts))
	byName := make(map[string]*tensors.Tensor, len(ts))
	for i, t := range ts {
		if err := t.Validate(); err != nil {
			return err
		}
		entries[i] = Entry{Name: t.Name, DType: t.DType, Shape: t.Shape}
		byName[t.Name] = t
	}
	SortEntries(entries)
	sizes, err := checkEntries(entries)
	if err != nil {
		return err
	}
	if err := metadataOK(metadata); err != nil {
		return err
	}
	shapes := make([][]int64, len(entries))
	for i, e := range entries {
		shapes[i] = e.Shape
	}
	h := pad8(appendHeader(nil, entries, shapes, sizes, metadata), 0)
	if len(h) > MaxHeaderSize {
		return &Error{Kind: ErrHeaderTooLarge, Detail: fmt.Sprintf("%d bytes", len(h))}
	}
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(h)))
	if _, err := w.Write(prefix[:]); err != nil {
		return err
	}
	if _, err := w.Write(h); err != nil {
		return err
	}
	for _, e := range entries {
		if _, err := w.Write(byName[e.Name].Data); err != nil {
			return err
		}
	}
	return nil
}

// Writer streams a safetensors file to disk one tensor at a time. It writes
// to a temporary file in the destination's directory; Close flushes it, syncs
// it to stable storage and renames it into place, so a reader never sees a
// partial file and a failure leaves the destination untouched. It refuses
// NaN and Inf in floating tensors (a *NonFiniteError) unless
// CreateOptions.AllowNonFinite.
type Writer struct {
	path     string
	tmp      *fsafe.File
	buf      *bufio.Writer
	opts     CreateOptions
	crc      hash.Hash32
	entries  []Entry
	sizes    []int64 // declared (bound) sizes
	shapes   [][]int64
	actual   []int64
	metadata map[string]string
	next     int
	partial  int64 // bytes of the next tensor already written by WriteChunk
	bounded  bool
	reserve  int // header length reserved when bounded
	skipped  []int
	metaFor  func([]Entry) map[string]string
	pos      int64 // bytes written so far, prefix and header included
	synced   int64 // bytes handed to writeback
	done     bool
}

// writebackChunk is how much written data accumulates before the writer
// asks the kernel to start writing it out.
const writebackChunk = 8 << 20

// Create starts a file at path that will hold exactly the declared entries,
// with the given __metadata__ (nil for none). Tensors must then be written
// in the order Order returns.
func Create(path string, entries []Entry, metadata map[string]string) (*Writer, error) {
	return CreateWith(path, entries, metadata, CreateOptions{})
}

// CreateOptions are the less common settings of CreateWith.
type CreateOptions struct {
	// MetadataFor, if set, returns more __metadata__ entries computed from
	// the file's tensors (with their final shapes; optional tensors left out
	// are not passed). It is called when the header is built: in CreateWith,
	// or, for a file with bounded or optional entries, at Close. Its result
	// must not get longer when tensors are fewer or smaller (the header's
	// length is reserved with the declared entries).
	MetadataFor func(tensors []Entry) map[string]string
	// AllowNonFinite lets NaN and Inf be written; otherwise Write and
	// WriteChunk refuse them with a *NonFiniteError (overflows of the
	// dtype included: they are checked in the encoded bytes).
	AllowNonFinite bool
	// Checksum makes the writer compute the CRC-32C of the data section as
	// it is written (see DataCRC).
	Checksum bool
	// NoReplace makes Close fail (with a *fsafe.ExistsError) when the
	// destination exists, instead of replacing it.
	NoReplace bool
}

// CreateWith is Create with options.
func CreateWith(path string, entries []Entry, metadata map[string]string, o CreateOptions) (*Writer, error) {
	entries = slices.Clone(entries)
	SortEntries(entries)
	sizes, err := checkEntries(entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := metadataOK(metadata); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w := &Writer{path: path, entries: entries, sizes: sizes, metadata: metadata, opts: o,
		shapes: make([][]int64, len(entries)), actual: make([]int64, len(entries))}
	if o.Checksum {
		w.crc = crc32.New(castagnoli)
	}
	for i, e := range entries {
		w.shapes[i] = e.Shape
		w.bounded = w.bounded || e.Bounded || e.Optional
	}
	// With exact shapes the header is final now; with bounds, the header for
	// the bounds is the longest the real one can be (every number in it can
	// only get smaller), so its length is reserved.
	w.metaFor = o.MetadataFor
	header := pad8(appendHeader(nil, entries, w.shapes, sizes, w.headerMetadata(entries)), 0)
	if len(header) > MaxHeaderSize {
		return nil, &Error{File: path, Kind: ErrHeaderTooLarge, Detail: fmt.Sprintf("the header would take %d bytes", len(header))}
	}
	tmp, err := fsafe.CreateFile(path, !o.NoReplace)
	if err != nil {
		return nil, err
	}
	w.tmp = tmp
	w.buf = bufio.NewWriterSize(tmp, 1<<20)
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(header)))
	if w.bounded {
		w.reserve = len(header)
		for i := range header {
			header[i] = ' '
		}
	}
	w.buf.Write(prefix[:])
	w.pos = 8 + int64(len(header))
	if _, err := w.buf.Write(header); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

// headerMetadata merges the fixed metadata with MetadataFor's.
func (w *Writer) headerMetadata(entries []Entry) map[string]string {
	if w.metaFor == nil {
		return w.metadata
	}
	out := map[string]string{}
	for k, v := range w.metadata {
		out[k] = v
	}
	for k, v := range w.metaFor(entries) {
		out[k] = v
	}
	return out
}

// Order returns the entries in the order their tensors must be written.
func (w *Writer) Order() []Entry { return w.entries }

// Write writes the next tensor. Its name and dtype must be those of the next
// entry in Order, its shape the declared one (or, for a bounded entry, of the
// same rank and no larger in any dimension).
func (w *Writer) Write(t *tensors.Tensor) error {
	if w.done {
		return fmt.Errorf("%s: write after close", w.path)
	}
	if w.next >= len(w.entries) {
		return fmt.Errorf("%s: tensor %q: all declared tensors are written", w.path, t.Name)
	}
	e := w.entries[w.next]
	if t.Name != e.Name || t.DType != e.DType {
		return fmt.Errorf("%s: expected tensor %q (%s) next, got %q (%s)", w.path, e.Name, e.DType, t.Name, t.DType)
	}
	if err := t.Validate(); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	if e.Bounded {
		if len(t.Shape) != len(e.Shape) {
			return fmt.Errorf("%s: tensor %q: shape %v does not fit the bound %v", w.path, t.Name, t.Shape, e.Shape)
		}
		for i := range t.Shape {
			if t.Shape[i] > e.Shape[i] {
				return fmt.Errorf("%s: tensor %q: shape %v does not fit the bound %v", w.path, t.Name, t.Shape, e.Shape)
			}
		}
		w.shapes[w.next] = slices.Clone(t.Shape)
	} else if !slices.Equal(t.Shape, e.Shape) {
		return fmt.Errorf("%s: tensor %q: shape %v, declared %v", w.path, t.Name, t.Shape, e.Shape)
	}
	if w.partial != 0 {
		return fmt.Errorf("%s: tensor %q: written whole after %d bytes were written in chunks", w.path, t.Name, w.partial)
	}
	if !w.opts.AllowNonFinite {
		if err := CheckFinite(e, 0, t.Data); err != nil {
			return err
		}
	}
	if err := w.write(t.Name, t.Data); err != nil {
		return err
	}
	w.actual[w.next] = int64(len(t.Data))
	w.next++
	return nil
}

// write appends data to the file, starting writeback every few megabytes.
func (w *Writer) write(name string, data []byte) error {
	if _, err := w.buf.Write(data); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	if w.crc != nil {
		w.crc.Write(data)
	}
	w.pos += int64(len(data))
	if w.pos-w.synced >= writebackChunk {
		if err := w.buf.Flush(); err != nil {
			return fmt.Errorf("%s: %w", w.path, err)
		}
		startWriteback(w.tmp.File, w.synced, w.pos-w.synced)
		w.synced = w.pos
	}
	return nil
}

// WriteChunk writes the next bytes of the next tensor, which must be the
// named one and not bounded: a tensor can be written as consecutive chunks
// instead of in one piece, so that it never has to be held in memory whole.
// The tensor is complete when its declared size has been written.
func (w *Writer) WriteChunk(name string, data []byte) error {
	if w.done {
		return fmt.Errorf("%s: write after close", w.path)
	}
	if w.next >= len(w.entries) {
		return fmt.Errorf("%s: tensor %q: all declared tensors are written", w.path, name)
	}
	e := w.entries[w.next]
	if name != e.Name || e.Bounded {
		return fmt.Errorf("%s: expected a chunk of tensor %q (bounded=%v) next, got one of %q", w.path, e.Name, e.Bounded, name)
	}
	if w.partial+int64(len(data)) > w.sizes[w.next] {
		return fmt.Errorf("%s: tensor %q: chunks add up to more than its %d bytes", w.path, name, w.sizes[w.next])
	}
	if !w.opts.AllowNonFinite {
		if err := CheckFinite(e, w.partial, data); err != nil {
			return err
		}
	}
	if err := w.write(name, data); err != nil {
		return err
	}
	w.partial += int64(len(data))
	if w.partial == w.sizes[w.next] {
		w.actual[w.next] = w.partial
		w.partial = 0
		w.next++
	}
	return nil
}

// Skip passes over the next entry, which must be Optional: the file will
// not have that tensor.
func (w *Writer) Skip(name string) error {
	if w.done || w.next >= len(w.entries) {
		return fmt.Errorf("%s: skip %q: no tensor expected", w.path, name)
	}
	e := w.entries[w.next]
	if e.Name != name || !e.Optional {
		return fmt.Errorf("%s: cannot skip %q (expected %q, optional=%v)", w.path, name, e.Name, e.Optional)
	}
	w.skipped = append(w.skipped, w.next)
	w.next++
	return nil
}

// Close completes the file: it checks every declared tensor was written,
// writes a deferred header, syncs and renames the temporary file to the
// destination. On error the temporary file is removed.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	if w.next != len(w.entries) {
		w.Abort()
		return fmt.Errorf("%s: closed after %d of %d tensors; expected %q next", w.path, w.next, len(w.entries), w.entries[w.next].Name)
	}
	err := w.buf.Flush()
	if err == nil && w.bounded {
		entries, shapes, actual := w.entries, w.shapes, w.actual
		if len(w.skipped) > 0 {
			entries, shapes, actual = nil, nil, nil
			for i, e := range w.entries {
				if !slices.Contains(w.skipped, i) {
					entries, shapes, actual = append(entries, e), append(shapes, w.shapes[i]), append(actual, w.actual[i])
				}
			}
		}
		final := make([]Entry, len(entries))
		for i, e := range entries {
			final[i] = Entry{Name: e.Name, DType: e.DType, Shape: shapes[i]}
		}
		header := pad8(appendHeader(nil, entries, shapes, actual, w.headerMetadata(final)), w.reserve)
		if len(header) != w.reserve {
			err = fmt.Errorf("internal error: header of %d bytes exceeds the %d reserved", len(header), w.reserve)
		} else {
			_, err = w.tmp.WriteAt(header, 8)
		}
	}
	w.done = true
	if err != nil {
		w.tmp.Abort()
		return fmt.Errorf("%s: %w", w.path, err)
	}
	if err := w.tmp.Commit(); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	return nil
}

// DataCRC returns the CRC-32C (Castagnoli) of the data section written so
// far; it needs CreateOptions.Checksum.
func (w *Writer) DataCRC() uint32 {
	if w.crc == nil {
		return 0
	}
	return w.crc.Sum32()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DataCRC computes the CRC-32C of a file's data section as
// Writer.DataCRC reports it, reading the file with positioned reads.
func (f *File) DataCRC() (uint32, error) {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f.f, f.Header.DataOffset, f.Header.DataSize)); err != nil {
		return 0, fmt.Errorf("%s: %w", f.Path, err)
	}
	return h.Sum32(), nil
}

// Abort discards the temporary file; the destination is left untouched.
// It is safe to call after Close.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.tmp.Abort()
	return nil
}
