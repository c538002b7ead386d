package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Producer computes the tensor for an output entry. It is called once per
// entry, possibly from several goroutines at a time (see WriteOptions.Workers)
// and in an order close to the file order. The returned tensor must have the
// entry's name and dtype, and its shape (within the bounds, for a bounded
// entry). done, if not nil, is called once the tensor's bytes are written, so
// the producer can release what backs them (mapped input pages, buffers).
type Producer func(ctx context.Context, e safetensors.Entry) (t *tensors.Tensor, done func(), err error)

// WriteOptions control Write.
type WriteOptions struct {
	// MaxShardSize is the largest shard in bytes (tensor data); 0 means
	// DefaultMaxShardSize. Ignored for a single-file output.
	MaxShardSize int64
	// Metadata is the __metadata__ written into every shard.
	Metadata map[string]string
	// CopyFiles are paths of files copied into the output directory
	// (typically Model.CompanionFiles of the input).
	CopyFiles []string
	// Files are extra files written into the output directory, by name; they
	// replace copied files of the same name (an updated config.json, say).
	Files map[string][]byte
	// Force allows replacing an existing output.
	Force bool
	// Inputs are the paths the output was computed from. The output may not
	// be one of them, nor a directory containing one of them.
	Inputs []string
	// Workers is how many tensors are produced concurrently ahead of the
	// writer (memory holds at most this many produced tensors); 0 means 2.
	Workers int
	// Progress, if set, is called after each tensor with the bytes written
	// so far and in total.
	Progress func(done, total int64)
	// Finalize, if set, is called once every tensor is written, with the
	// (temporary) output directory, to add files that depend on what was
	// computed (a report, an adapter beside the model). They are in place
	// before the output appears. Directory outputs only.
	Finalize func(dir string) error
	// MetadataFor, if set, adds __metadata__ entries to each weight file
	// from that file's tensors (see safetensors.CreateOptions).
	MetadataFor func(tensors []safetensors.Entry) map[string]string
	// WeightsName replaces "model" in the weight files' names
	// ("adapter_model" gives adapter_model.safetensors).
	WeightsName string
	// Chunks, if set, is asked once for each entry before it is written. A
	// non-nil ChunkFunc means the writer fills that tensor chunk by chunk
	// (chunks of at most ChunkSize bytes, filled concurrently, written in
	// order) instead of calling the Producer for it, so no whole copy of the
	// tensor is ever held in memory. Bounded, optional and sub-byte entries
	// always go through the Producer.
	Chunks func(e safetensors.Entry) ChunkFunc
	// MaxMemory bounds the bytes of produced tensors and chunk buffers held
	// at once, ahead of the writer; 0 means DefaultMaxMemory(). A tensor
	// larger than the budget is still produced, with nothing else ahead.
	MaxMemory int64
	// AllowNonFinite lets NaN and Inf be written; otherwise an encoded
	// chunk holding one fails the write with a *NonFiniteError.
	AllowNonFinite bool
}

// ChunkFunc fills dst with the bytes [off, off+len(dst)) of one output
// tensor, encoded in the tensor's dtype; off and len(dst) are multiples of
// the element size. The writer calls it for every chunk of the tensor
// exactly once, concurrently and in any order, so it must not depend on
// other chunks having been filled (whole-tensor quantities are computed
// once, e.g. with a sync.Once, from the inputs).
type ChunkFunc func(ctx context.Context, off int64, dst []byte) error

// ChunkSize is the largest chunk the writer asks a ChunkFunc to fill.
const ChunkSize = 4 << 20

// Written describes a completed output.
type Written struct {
	Path      string   // the output path
	Files     []string // weight files written, in order
	Tensors   int
	TotalSize int64 // bytes of tensor data
}

// IsSingleFile reports whether out names a single .safetensors file rather
// than a model directory.
func IsSingleFile(out string) bool { return strings.HasSuffix(out, ".safetensors") }

// Write streams a new checkpoint to out. If out ends in .safetensors, it is
// one file; otherwise out is a model directory: model.safetensors when the
// tensors fit in one shard, else model-0000i-of-0000N.safetensors files,
// filled greedily in name order up to MaxShardSize (a larger tensor gets a
// shard of its own), and model.safetensors.index.json; CopyFiles and Files
// are placed beside them.
//
// Everything is written into a temporary file or directory next to out and
// renamed into place at the end, after an fsync, so an error or a cancelled
// ctx leaves no partial output and an existing out (replaced only with
// Force) is never half-overwritten.
func Write(ctx context.Context, out string, entries []safetensors.Entry, produce Producer, opts WriteOptions) (*Written, error) {
	if err := CheckOutput(out, opts.Inputs, opts.Force); err != nil {
		return nil, err
	}
	var total int64
	sizes := make(map[string]int64, len(entries))
	for _, e := range entries {
		n, err := tensors.ByteSize(e.DType, e.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", e.Name, err)
		}
		sizes[e.Name] = n
		total += n
	}
	w := &writeJob{ctx: ctx, produce: produce, opts: opts, total: total}
	if IsSingleFile(out) {
		if len(opts.Files) > 0 {
			return nil, fmt.Errorf("%s: extra files (%s) need a directory output, not a single file", out, strings.Join(slices.Sorted(maps.Keys(opts.Files)), ", "))
		}
		if err := w.shards([]string{out}, [][]safetensors.Entry{entries}); err != nil {
			return nil, err
		}
		return &Written{Path: out, Files: []string{out}, Tensors: w.written, TotalSize: w.done}, nil
	}
	return w.directory(out, entries, sizes)
}

type writeJob struct {
	ctx     context.Context
	produce Producer
	opts    WriteOptions
	total   int64
	done    int64
	written int             // tensors written
	skipped map[string]bool // optional entries the producer left out
}

// planShards splits entries, in name order, into shards of at most limit
// bytes of data (a larger tensor alone in its shard).
func planShards(entries []safetensors.Entry, sizes map[string]int64, limit int64) [][]safetensors.Entry {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b safetensors.Entry) int { return strings.Compare(a.Name, b.Name) })
	var shards [][]safetensors.Entry
	var cur []safetensors.Entry
	var curSize int64
	for _, e := range sorted {
		n := sizes[e.Name]
		if len(cur) > 0 && curSize+n > limit {
			shards = append(shards, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, e)
		curSize += n
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	return shards
}

func (w *writeJob) directory(out string, entries []safetensors.Entry, sizes map[string]int64) (*Written, error) {
	limit := w.opts.MaxShardSize
	if limit <= 0 {
		limit = DefaultMaxShardSize
	}
	plan := planShards(entries, sizes, limit)
	parent, base := filepath.Split(filepath.Clean(out))
	if parent == "" {
		parent = "."
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".tmp-")
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			os.RemoveAll(tmp)
		}
	}()
	os.Chmod(tmp, 0o755)

	stem := "model"
	if w.opts.WeightsName != "" {
		stem = w.opts.WeightsName
	}
	names := []string{stem + ".safetensors"}
	if len(plan) > 1 {
		names = names[:0]
		for i := range plan {
			names = append(names, fmt.Sprintf("%s-%05d-of-%05d.safetensors", stem, i+1, len(plan)))
		}
	}
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(tmp, n)
	}
	// companion files first: a missing one fails before the long part
	for _, src := range w.opts.CopyFiles {
		name := filepath.Base(src)
		if _, replaced := w.opts.Files[name]; replaced {
			continue
		}
		if err := copyFile(src, filepath.Join(tmp, name)); err != nil {
			return nil, err
		}
	}
	for name, data := range w.opts.Files {
		if name != filepath.Base(name) || slices.Contains(names, name) || name == IndexFileName {
			return nil, fmt.Errorf("extra file %q: not a plain file name, or it would replace a weight file", name)
		}
		if err := writeFileSync(filepath.Join(tmp, name), data); err != nil {
			return nil, err
		}
	}
	if err := w.shards(paths, plan); err != nil {
		return nil, err
	}
	if len(plan) > 1 {
		ix := &Index{TotalSize: w.done, WeightMap: map[string]string{}}
		for i, shard := range plan {
			for _, e := range shard {
				if !w.skipped[e.Name] {
					ix.WeightMap[e.Name] = names[i]
				}
			}
		}
		if err := writeFileSync(filepath.Join(tmp, stem+".safetensors.index.json"), encodeIndex(ix)); err != nil {
			return nil, err
		}
	}
	if w.opts.Finalize != nil {
		if err := w.opts.Finalize(tmp); err != nil {
			return nil, err
		}
	}
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	if err := replaceDir(tmp, out, w.opts.Force); err != nil {
		return nil, err
	}
	committed = true
	res := &Written{Path: out, Tensors: w.written, TotalSize: w.done}
	for _, n := range names {
		res.Files = append(res.Files, filepath.Join(out, n))
	}
	return res, nil
}

// safeProduce runs a producer, turning a memory fault — an input file
// truncated or changed while it is mapped — into an error instead of a crash.
func safeProduce(ctx context.Context, produce Producer, e safetensors.Entry) (r produced) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			// a fault panics with a runtime error that has the faulting address
			if err, ok := p.(interface {
				error
				Addr() uintptr
			}); ok {
				r = produced{err: fmt.Errorf("tensor %q: reading a mapped input failed (was the file changed or truncated while wtool ran?): %v", e.Name, err)}
				return
			}
			panic(p)
		}
	}()
	t, done, err := produce(ctx, e)
	return produced{t: t, done: done, err: err}
}

type produced struct {
	t     *tensors.Tensor
	chunk []byte // the bytes of a chunk item
	done  func()
	err   error
}

// shards writes each shard file from its entries, producing tensors (or
// chunks of tensors, see WriteOptions.Chunks) concurrently, up to Workers at
// a time and MaxMemory bytes ahead of the writer, and writing them in file
// order.
func (w *writeJob) shards(paths []string, plan [][]safetensors.Entry) error {
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	writers := make([]*safetensors.Writer, len(plan))
	defer func() {
		for _, sw := range writers {
			if sw != nil {
				sw.Abort()
			}
		}
	}()
	var order []item
	for i, p := range paths {
		sw, err := safetensors.CreateWith(p, plan[i], w.opts.Metadata, safetensors.CreateOptions{MetadataFor: w.opts.MetadataFor})
		if err != nil {
			return err
		}
		writers[i] = sw
		for _, e := range sw.Order() {
			order = w.appendItems(order, i, e)
		}
	}
	workers := w.opts.Workers
	if workers <= 0 {
		workers = 2
	}
	limit := w.opts.MaxMemory
	if limit <= 0 {
		limit = DefaultMaxMemory()
	}
	// a ring of result slots: item i may start once item i-window is written
	window := workers + 2
	results := make([]chan produced, window)
	for i := range results {
		results[i] = make(chan produced, 1)
	}
	slots := make(chan struct{}, window)
	mem := newBudget(limit)
	// Producers may read mapped inputs: every one must have returned before
	// this function does, or the caller could unmap what they read.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	running := make(chan struct{}, workers)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, it := range order {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if !mem.acquire(ctx, it.cost) {
				return
			}
			select {
			case running <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := w.run(ctx, it)
				<-running
				results[i%window] <- r
			}()
		}
	}()
	for i, it := range order {
		var r produced
		select {
		case r = <-results[i%window]:
		case <-ctx.Done():
			return ctx.Err()
		}
		sw := writers[it.shard]
		skip := r.err == nil && r.t == nil && it.fill == nil
		switch {
		case r.err != nil:
		case it.fill != nil:
			r.err = sw.WriteChunk(it.e.Name, r.chunk)
		case skip && !it.e.Optional:
			r.err = fmt.Errorf("tensor %q: producer returned no tensor", it.e.Name)
		case skip:
			r.err = sw.Skip(it.e.Name)
			if w.skipped == nil {
				w.skipped = map[string]bool{}
			}
			w.skipped[it.e.Name] = true
		default:
			r.err = sw.Write(r.t)
		}
		if r.done != nil {
			r.done()
		}
		mem.release(it.cost)
		if r.err != nil {
			return r.err
		}
		switch {
		case it.fill != nil:
			w.done += int64(len(r.chunk))
			if it.last {
				w.written++
			}
		case !skip:
			w.done += int64(len(r.t.Data))
			w.written++
		}
		if w.opts.Progress != nil {
			w.opts.Progress(w.done, w.total)
		}
		<-slots
		if i+1 == len(order) || order[i+1].shard != it.shard {
			if err := sw.Close(); err != nil {
				return err
			}
		}
	}
	for i, sw := range writers {
		if len(plan[i]) == 0 { // a file with no tensors at all
			if err := sw.Close(); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// item is one unit of work of the writer: a whole tensor, or one chunk of a
// tensor filled by a ChunkFunc.
type item struct {
	shard int
	e     safetensors.Entry
	fill  ChunkFunc // nil for a whole tensor
	off   int64     // chunk: byte offset in the tensor
	size  int64     // chunk: bytes
	last  bool      // chunk: the tensor's last
	cost  int64     // bytes counted against MaxMemory
}

// appendItems adds the work items of one entry: its chunks when the
// options fill it chunk by chunk, else the whole tensor.
func (w *writeJob) appendItems(order []item, shard int, e safetensors.Entry) []item {
	size, _ := tensors.ByteSize(e.DType, e.Shape)
	var fill ChunkFunc
	if w.opts.Chunks != nil && !e.Bounded && !e.Optional && size > 0 && e.DType.Bits()%8 == 0 {
		fill = w.opts.Chunks(e)
	}
	if fill == nil {
		return append(order, item{shard: shard, e: e, cost: size})
	}
	chunk := int64(ChunkSize) / int64(e.DType.Bits()/8) * int64(e.DType.Bits()/8)
	for off := int64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		order = append(order, item{shard: shard, e: e, fill: fill, off: off, size: n, last: off+n == size, cost: n})
	}
	return order
}

// run produces one item, turning a memory fault into an error.
func (w *writeJob) run(ctx context.Context, it item) produced {
	if it.fill == nil {
		return safeProduce(ctx, w.produce, it.e)
	}
	buf := chunkPool.Get(int(it.size))
	err := safetensors.Guard("", it.e.Name, func() error { return it.fill(ctx, it.off, buf) })
	if err == nil && !w.opts.AllowNonFinite {
		err = CheckFinite(it.e, it.off, buf)
	}
	if err != nil {
		chunkPool.Put(buf)
		if !errors.As(err, new(*NonFiniteError)) && !strings.Contains(err.Error(), it.e.Name) {
			err = fmt.Errorf("tensor %q: %w", it.e.Name, err)
		}
		return produced{err: err}
	}
	return produced{chunk: buf, done: func() { chunkPool.Put(buf) }}
}

var chunkPool tensors.BufferPool

// CheckOutput refuses an output path that is one of the inputs, or a
// directory that contains one (writing it would destroy the input), and an
// existing output unless force is set.
func CheckOutput(out string, inputs []string, force bool) error {
	if out == "" {
		return errors.New("no output path given")
	}
	outAbs, err := resolve(out)
	if err != nil {
		return err
	}
	outInfo, statErr := os.Stat(out)
	for _, in := range inputs {
		inAbs, err := resolve(in)
		if err != nil {
			return err
		}
		if inAbs == outAbs {
			return fmt.Errorf("output %s is the input %s: refusing to overwrite an input", out, in)
		}
		if rel, err := filepath.Rel(outAbs, inAbs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("output %s contains the input %s: refusing to overwrite an input", out, in)
		}
		if statErr == nil {
			if inInfo, err := os.Stat(in); err == nil && os.SameFile(outInfo, inInfo) {
				return fmt.Errorf("output %s is the input %s: refusing to overwrite an input", out, in)
			}
		}
	}
	if statErr == nil && !force {
		return fmt.Errorf("output %s already exists (use --force to replace it)", out)
	}
	return nil
}

// resolve returns the absolute path of p with symbolic links evaluated in its
// longest existing prefix.
func resolve(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	cur := abs
	for {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest), nil
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// replaceDir renames the finished directory tmp to out; with force an
// existing out is moved aside first and removed after.
func replaceDir(tmp, out string, force bool) error {
	syncPath(tmp)
	if _, err := os.Lstat(out); err == nil {
		if !force {
			return fmt.Errorf("output %s already exists (use --force to replace it)", out)
		}
		old := tmp + ".old"
		if err := os.Rename(out, old); err != nil {
			return err
		}
		if err := os.Rename(tmp, out); err != nil {
			os.Rename(old, out)
			return err
		}
		syncPath(filepath.Dir(out))
		return os.RemoveAll(old)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	syncPath(filepath.Dir(out))
	return nil
}

func syncPath(p string) {
	if f, err := os.Open(p); err == nil {
		f.Sync()
		f.Close()
	}
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm()|0o200)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}
