// Package checkpoint opens and writes whole models: a single .safetensors
// file, a sharded set of files with a model.safetensors.index.json, or a
// Hugging Face model directory holding either plus config.json, tokenizer
// files and the like.
//
// A Model gives lazy, zero-copy access to tensors by name, across shards, in
// a stable (sorted) order; nothing is read beyond the headers until a tensor
// is asked for, and Release returns its pages to the kernel afterwards. Write
// streams a new model to disk tensor by tensor, sharding by a byte limit,
// copying the input directory's non-weight files, and replacing the
// destination atomically.
package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// TensorInfo describes a tensor of a model and where it is stored.
type TensorInfo struct {
	Name  string
	DType tensors.DType
	Shape []int64
	Size  int64  // bytes
	File  string // path of the shard file holding it
}

// Model is an opened checkpoint. It is safe for concurrent use.
type Model struct {
	// Path is the path the model was opened from.
	Path string
	// Dir is the model directory when Path is a directory or an index file
	// (its non-weight files are copied by Write); "" for a lone file.
	Dir string
	// Index is the shard index of a sharded model, nil otherwise.
	Index *Index

	files   []*safetensors.File // in shard name order
	where   map[string]int32    // tensor name -> index into files (several files only)
	refs    []ref               // every tensor, in name order
	names   []string            // sorted
	weights []string            // base names of the weight files, including the index
}

// ErrNotFound reports that a model has no tensor of a given name.
var ErrNotFound = errors.New("no such tensor")

// Open opens the checkpoint at path: a .safetensors file, an index file, or
// a directory. In a directory the index model.safetensors.index.json (or a
// single other *.safetensors.index.json) wins, then model.safetensors, then
// the only *.safetensors file. Every shard's header is read and validated,
// and the index must agree with the shards exactly: Open fails, naming the
// file and tensor, on a missing shard, a tensor the index places in a shard
// that lacks it, or a shard tensor the index does not list.
func Open(path string) (*Model, error) {
	return OpenContext(context.Background(), path)
}

// OpenContext is Open that stops with ctx's error when ctx is done while
// headers are read (a header can describe a million tensors, a model
// thousands of shards). Paths that are not regular files or directories
// are refused without being opened.
func OpenContext(ctx context.Context, path string) (*Model, error) {
	st, err := fsafe.StatInput(path)
	if err != nil {
		return nil, err
	}
	m := &Model{Path: path}
	var weightFiles []string
	switch {
	case st.IsDir():
		m.Dir = path
		indexPath, single, err := findWeights(path)
		if err != nil {
			return nil, err
		}
		if indexPath != "" {
			if weightFiles, err = m.readIndex(indexPath); err != nil {
				return nil, err
			}
		} else {
			weightFiles = []string{single}
		}
	case strings.HasSuffix(path, ".json"):
		m.Dir = filepath.Dir(path)
		if weightFiles, err = m.readIndex(path); err != nil {
			return nil, err
		}
	default:
		weightFiles = []string{path}
	}
	for _, wf := range weightFiles {
		if err := ctx.Err(); err != nil {
			m.Close()
			return nil, err
		}
		f, err := safetensors.OpenContext(ctx, wf)
		if err != nil {
			m.Close()
			if errors.Is(err, os.ErrNotExist) && m.Index != nil {
				return nil, fmt.Errorf("%s: shard named in the index is missing: %w", wf, err)
			}
			return nil, err
		}
		m.files = append(m.files, f)
		m.weights = append(m.weights, filepath.Base(wf))
	}
	if err := m.link(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Model) readIndex(indexPath string) ([]string, error) {
	ix, err := ReadIndex(indexPath)
	if err != nil {
		return nil, err
	}
	m.Index = ix
	m.weights = append(m.weights, filepath.Base(indexPath))
	dir := filepath.Dir(indexPath)
	var files []string
	for _, s := range ix.Shards() {
		files = append(files, filepath.Join(dir, s))
	}
	return files, nil
}

// link builds the name order and the name -> file map (for several shards)
// and checks the index against the shards.
func (m *Model) link() error {
	n := 0
	for _, f := range m.files {
		n += len(f.Header.Tensors)
	}
	m.refs = make([]ref, 0, n)
	if len(m.files) > 1 {
		m.where = make(map[string]int32, n)
	}
	for i, f := range m.files {
		for j, t := range f.Header.Tensors {
			if m.where != nil {
				if k, dup := m.where[t.Name]; dup {
					return fmt.Errorf("tensor %q is in two shards: %s and %s", t.Name, m.files[k].Path, f.Path)
				}
				m.where[t.Name] = int32(i)
			}
			m.refs = append(m.refs, ref{file: int32(i), idx: int32(j)})
		}
	}
	slices.SortFunc(m.refs, func(a, b ref) int { return strings.Compare(m.nameOf(a), m.nameOf(b)) })
	m.names = make([]string, len(m.refs))
	for i, r := range m.refs {
		m.names[i] = m.nameOf(r)
	}
	if m.Index == nil {
		return nil
	}
	var missing []string
	for name, shard := range m.Index.WeightMap {
		i, ok := m.fileOf(name)
		if !ok {
			missing = append(missing, name)
			continue
		}
		if got := filepath.Base(m.files[i].Path); got != shard {
			return fmt.Errorf("tensor %q: the index says shard %s, but it is in %s", name, shard, got)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		more := ""
		if len(missing) > 1 {
			more = fmt.Sprintf(" (and %d more tensors)", len(missing)-1)
		}
		return fmt.Errorf("%s: tensor %q listed in the index is not in that shard%s", filepath.Join(filepath.Dir(m.files[0].Path), m.Index.WeightMap[missing[0]]), missing[0], more)
	}
	for i, name := range m.names {
		if _, ok := m.Index.WeightMap[name]; !ok {
			return fmt.Errorf("%s: tensor %q is not listed in the index", m.files[m.refs[i].file].Path, name)
		}
	}
	return nil
}

// ref locates a tensor: its file and its position in that file's header.
type ref struct{ file, idx int32 }

func (m *Model) nameOf(r ref) string { return m.files[r.file].Header.Tensors[r.idx].Name }

// fileOf returns the index of the file holding the named tensor.
func (m *Model) fileOf(name string) (int, bool) {
	if m.where != nil {
		i, ok := m.where[name]
		return int(i), ok
	}
	if len(m.files) == 1 {
		_, ok := m.files[0].Header.Lookup(name)
		return 0, ok
	}
	return 0, false
}

// findWeights picks the weights of a model directory.
func findWeights(dir string) (index, single string, err error) {
	if p := filepath.Join(dir, IndexFileName); isFile(p) {
		return p, "", nil
	}
	if p := filepath.Join(dir, "model.safetensors"); isFile(p) {
		return "", p, nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", err
	}
	var indexes, files, others []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case !e.Type().IsRegular() && e.Type()&os.ModeSymlink == 0:
		case strings.HasSuffix(n, ".safetensors.index.json"):
			indexes = append(indexes, n)
		case strings.HasSuffix(n, ".safetensors"):
			files = append(files, n)
		case strings.HasSuffix(n, ".bin") || strings.HasSuffix(n, ".pt") || strings.HasSuffix(n, ".pth") || strings.HasSuffix(n, ".gguf"):
			others = append(others, n)
		}
	}
	switch {
	case len(indexes) == 1:
		return filepath.Join(dir, indexes[0]), "", nil
	case len(indexes) > 1:
		return "", "", fmt.Errorf("%s: several shard indexes (%s); pass the one to use", dir, strings.Join(indexes, ", "))
	case len(files) == 1:
		return "", filepath.Join(dir, files[0]), nil
	case len(files) > 1:
		return "", "", fmt.Errorf("%s: several .safetensors files (%s) and no index; pass one file, or add a %s", dir, strings.Join(files, ", "), IndexFileName)
	case len(others) > 0:
		return "", "", fmt.Errorf("%s: no .safetensors weights (found %s); convert them to safetensors first", dir, strings.Join(others, ", "))
	}
	return "", "", fmt.Errorf("%s: no .safetensors weights", dir)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Names returns every tensor name in ascending order.
func (m *Model) Names() []string { return m.names }

// Info describes the named tensor.
func (m *Model) Info(name string) (TensorInfo, bool) {
	i, ok := m.fileOf(name)
	if !ok {
		return TensorInfo{}, false
	}
	f := m.files[i]
	t, _ := f.Header.Lookup(name)
	return TensorInfo{Name: name, DType: t.DType, Shape: t.Shape, Size: t.Size(), File: f.Path}, true
}

// InfoAt describes the i-th tensor in name order (Names()[i]) without a
// lookup by name.
func (m *Model) InfoAt(i int) TensorInfo {
	r := m.refs[i]
	f := m.files[r.file]
	t := f.Header.Tensors[r.idx]
	return TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Size: t.Size(), File: f.Path}
}

// Has reports whether the model has a tensor of that name.
func (m *Model) Has(name string) bool { _, ok := m.fileOf(name); return ok }

// Tensor returns the named tensor; its Data is a read-only zero-copy view of
// the mapped shard, valid until Close.
func (m *Model) Tensor(name string) (*tensors.Tensor, error) {
	i, ok := m.fileOf(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, name, ErrNotFound)
	}
	return m.files[i].Tensor(name)
}

// Release hands the named tensor's mapped pages back to the kernel (see
// safetensors.File.Release); views of it stay valid.
func (m *Model) Release(name string) {
	if i, ok := m.fileOf(name); ok {
		m.files[i].Release(name)
	}
}

// Prefetch maps the named tensor's pages ahead of use (a hint).
func (m *Model) Prefetch(name string) {
	if i, ok := m.fileOf(name); ok {
		m.files[i].Prefetch(name)
	}
}

// Metadata returns the __metadata__ of the first shard (Hugging Face writes
// the same map, usually {"format": "pt"}, into every shard); nil if none.
func (m *Model) Metadata() map[string]string {
	if len(m.files) == 0 {
		return nil
	}
	return m.files[0].Header.Metadata
}

// Files returns the paths of the weight files, in shard name order.
func (m *Model) Files() []string {
	out := make([]string, len(m.files))
	for i, f := range m.files {
		out[i] = f.Path
	}
	return out
}

// TotalSize returns the sum of the tensors' byte sizes.
func (m *Model) TotalSize() int64 {
	var n int64
	for _, f := range m.files {
		n += f.Header.DataSize
	}
	return n
}

// Close releases every shard.
func (m *Model) Close() error {
	var err error
	for _, f := range m.files {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// weightSuffixes are the endings of files that hold weights in some format.
// They are never copied next to new weights: a stale pytorch_model.bin beside
// a converted model.safetensors would be loaded by some tools instead.
var weightSuffixes = []string{
	".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth",
	".ckpt", ".h5", ".msgpack", ".msgpack.index.json", ".onnx", ".onnx_data", ".gguf", ".ot", ".pb", ".npz",
}

// CompanionFiles returns the paths of the non-weight files of the model's
// directory (config.json, generation_config.json, tokenizer files, README,
// ...) that a tool writing a new model from this one copies: regular files
// at the top level, not hidden, not weights in any format. A model opened
// from a lone file has none.
func (m *Model) CompanionFiles() ([]string, error) {
	if m.Dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || slices.Contains(m.weights, n) {
			continue
		}
		if !e.Type().IsRegular() {
			if e.Type()&os.ModeSymlink == 0 || !isFile(filepath.Join(m.Dir, n)) {
				continue
			}
		}
		weight := false
		for _, s := range weightSuffixes {
			if strings.HasSuffix(n, s) {
				weight = true
			}
		}
		if !weight {
			out = append(out, filepath.Join(m.Dir, n))
		}
	}
	return out, nil
}

// SameArchitecture checks that two models have the same tensor names and
// shapes (dtypes may differ); the error names the first difference.
func SameArchitecture(a, b *Model) error {
	an, bn := a.Names(), b.Names()
	i, j := 0, 0
	for i < len(an) || j < len(bn) {
		switch {
		case j == len(bn) || (i < len(an) && an[i] < bn[j]):
			return fmt.Errorf("tensor %q is in %s but not in %s", an[i], a.Path, b.Path)
		case i == len(an) || bn[j] < an[i]:
			return fmt.Errorf("tensor %q is in %s but not in %s", bn[j], b.Path, a.Path)
		}
		ai, _ := a.Info(an[i])
		bi, _ := b.Info(bn[j])
		if !slices.Equal(ai.Shape, bi.Shape) {
			return fmt.Errorf("tensor %q has shape %v in %s but %v in %s", an[i], ai.Shape, a.Path, bi.Shape, b.Path)
		}
		i++
		j++
	}
	return nil
}

// OpenFormat opens a safetensors file that one of wtool's own formats
// (statistics, Fisher information, ...) stores: its __metadata__ must name
// the format and the version, else the error says what the file is not
// (what: "statistics", say).
func OpenFormat(path, format, version, what string) (*Model, error) {
	m, err := Open(path)
	if err != nil {
		return nil, err
	}
	md := m.Metadata()
	switch {
	case md["format"] != format:
		err = fmt.Errorf("%s: not a wtool %s file (__metadata__ format is %q, want %q)", path, what, md["format"], format)
	case md["version"] != version:
		err = fmt.Errorf("%s: %s file version %q is not supported (this wtool reads version %s)", path, what, md["version"], version)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
