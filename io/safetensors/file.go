package safetensors

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/wtool/wtool/internal/faultinject"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/tensors"
)

// File is an open safetensors file. Its header is read and validated when it
// is opened; the data is memory-mapped on first use, and tensors are returned
// as zero-copy views of the mapping. A File is safe for concurrent use.
type File struct {
	// Path is the name the file was opened with.
	Path string
	// Header is the file's validated header.
	Header *Header

	f       *os.File
	mapOnce sync.Once
	mapped  []byte
	mapErr  error
	mu      sync.Mutex
	closed  bool
}

// ReadHeaderFile reads and validates only the header of the file at path:
// 8 + N bytes are read, never the tensor data. Errors are *Error values
// naming the file. A path that is not a regular file (a FIFO, a device) is
// refused before anything is read.
func ReadHeaderFile(path string) (*Header, error) {
	f, err := fsafe.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		return nil, withFile(err, path)
	}
	return h, nil
}

// Open opens the safetensors file at path and validates its header. The
// tensor data is not read until a tensor is asked for. A path that is not a
// regular file (a FIFO, a device) is refused before anything is read.
func Open(path string) (*File, error) {
	return OpenContext(context.Background(), path)
}

// OpenContext is Open that stops with ctx's error when ctx is done while
// the header is parsed.
func OpenContext(ctx context.Context, path string) (*File, error) {
	f, err := fsafe.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ReadHeaderContext(ctx, f, st.Size())
	if err != nil {
		f.Close()
		return nil, withFile(err, path)
	}
	return &File{Path: path, Header: h, f: f}, nil
}

func (f *File) mapping() ([]byte, error) {
	f.mapOnce.Do(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.closed {
			f.mapErr = fmt.Errorf("%s: file is closed", f.Path)
			return
		}
		f.mapped, f.mapErr = mapFile(f.f, f.Header.FileSize())
		if f.mapErr != nil {
			f.mapErr = fmt.Errorf("%s: mapping the file: %w", f.Path, f.mapErr)
			return
		}
		addMapping(f, f.mapped)
	})
	return f.mapped, f.mapErr
}

// Data returns a read-only view of the bytes of the named tensor. The view
// stays valid until Close; writing to it faults.
func (f *File) Data(name string) ([]byte, error) {
	info, ok := f.Header.Lookup(name)
	if !ok {
		return nil, &Error{File: f.Path, Tensor: name, Kind: ErrTensorNotFound}
	}
	m, err := f.mapping()
	if err != nil {
		return nil, err
	}
	start := f.Header.DataOffset + info.Begin
	faultinject.BeforeView(f.Path, name, start)
	return m[start : start+info.Size() : start+info.Size()], nil
}

// Tensor returns the named tensor with Data a zero-copy view of the file.
func (f *File) Tensor(name string) (*tensors.Tensor, error) {
	data, err := f.Data(name)
	if err != nil {
		return nil, err
	}
	info, _ := f.Header.Lookup(name)
	return &tensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: data}, nil
}

// ReadTensor copies the named tensor's bytes into dst (which must have the
// tensor's size) with positioned reads, without mapping the file.
func (f *File) ReadTensor(name string, dst []byte) error {
	info, ok := f.Header.Lookup(name)
	if !ok {
		return &Error{File: f.Path, Tensor: name, Kind: ErrTensorNotFound}
	}
	if int64(len(dst)) != info.Size() {
		return fmt.Errorf("%s: tensor %q: buffer of %d bytes for %d", f.Path, name, len(dst), info.Size())
	}
	if _, err := f.f.ReadAt(dst, f.Header.DataOffset+info.Begin); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", f.Path, name, err)
	}
	return nil
}

// Release tells the kernel that the mapped pages of the named tensor are no
// longer needed, so they stop counting towards the process's resident memory.
// Views stay valid: touching them again reads the pages back from the page
// cache. Releasing is what keeps streaming over a large model in bounded
// memory.
func (f *File) Release(name string) {
	info, ok := f.Header.Lookup(name)
	if !ok || f.mapped == nil {
		return
	}
	start := f.Header.DataOffset + info.Begin
	releaseRange(f.mapped, start, start+info.Size())
}

// Prefetch asks the kernel to map the named tensor's pages now, in one call,
// instead of one page fault at a time as they are first touched. It is a
// hint: errors (old kernels) are ignored.
func (f *File) Prefetch(name string) {
	info, ok := f.Header.Lookup(name)
	if !ok {
		return
	}
	m, err := f.mapping()
	if err != nil {
		return
	}
	start := f.Header.DataOffset + info.Begin
	populateRange(m, start, start+info.Size())
}

// Close unmaps and closes the file. Views returned earlier become invalid.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var err error
	if f.mapped != nil {
		removeMapping(f.mapped)
		err = unmapFile(f.mapped)
		f.mapped = nil
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	return err
}
