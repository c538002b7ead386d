package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/internal/faultinject"
	"github.com/wtool/wtool/io/fsafe"
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
	// be one of them, contain one, or lie inside one (compared by device and
	// inode, see fsafe.CheckOutput).
	Inputs []string
	// Workers is how many tensors are produced concurrently ahead of the
	// writer (memory holds at most this many produced tensors); 0 means 2.
	Workers int
	// Progress, if set, is called after each tensor with the bytes written
	// so far and in total.
	Progress func(done, total int64)
	// Finalize, if set, is called once every tensor is written, with the
	// (temporary) output directory, to add files that depend on what was
	// computed. They are in place before the output appears. Directory
	// outputs only; a write split into parts cannot have one (use State).
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
	// AllowNonFinite lets NaN and Inf be written; otherwise a tensor or
	// chunk whose encoded bytes hold one (a copied input value, a computed
	// one, or an overflow of the output dtype) fails the write with a
	// *NonFiniteError.
	AllowNonFinite bool

	// Part, when set (N >= 1), makes this write part K of N of a directory
	// output: it computes and writes only the shards the plan assigns to
	// part K (contiguous runs of shards balanced by bytes, the same in every
	// part), into OUT.parts/part-K-of-N; Finalize then assembles OUT. See
	// docs/distributed.md.
	Part Part
	// Resume picks up the completed shards that a killed write of the same
	// output (same plan and Fingerprint) left in its temporary directory,
	// after checking them; and a write that fails or is interrupted keeps
	// its completed shards there for a later resume. Without Resume, an
	// earlier run's temporaries are removed and a failed write leaves
	// nothing.
	Resume bool
	// Fingerprint identifies what produces the tensors (the command, its
	// parameters, its inputs). Completed shards are only resumed, and parts
	// only assembled, when they were written with the same fingerprint.
	Fingerprint string
	// State carries what the producer computes besides tensors (reports,
	// factors for a second file) to the step that completes a directory
	// output, shard by shard, so that resumed and split writes complete it
	// exactly as a single run does.
	State *State
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
	Path      string   // the output path (for a part: its directory in OUT.parts)
	Files     []string // weight files written, in order
	Tensors   int      // tensors written by this run
	TotalSize int64    // bytes of tensor data written by this run
	// Resumed counts the shards taken over from a killed run.
	Resumed int
	// Notes say what was done besides writing: temporaries of killed runs
	// removed, a run resumed.
	Notes []string
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
// Everything is written into a locked temporary file or directory next to
// out (".NAME.tmp-*") and put in place at the end, after an fsync (a
// directory by an atomic exchange with an existing one), so an error or a
// cancelled ctx leaves no partial output and an existing out (replaced only
// with Force) is never half-overwritten. Temporaries of killed earlier runs
// are removed (or, with Resume, continued). Shard files are opened one at a
// time, as the writer reaches them.
func Write(ctx context.Context, out string, entries []safetensors.Entry, produce Producer, opts WriteOptions) (*Written, error) {
	if opts.Part.Active() {
		if err := opts.Part.Validate(); err != nil {
			return nil, err
		}
		if IsSingleFile(out) {
			return nil, fmt.Errorf("%s: a single .safetensors file cannot be split into parts; give a directory output", out)
		}
		if opts.Finalize != nil {
			return nil, fmt.Errorf("%s: this output is completed by a step that needs every tensor, so it cannot be split into parts", out)
		}
	}
	if err := CheckOutput(out, opts.Inputs, opts.Force || opts.Part.Active()); err != nil {
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
		notes, err := fsafe.CleanStale(out, false)
		if err != nil {
			return nil, err
		}
		if err := w.shards([]string{out}, [][]safetensors.Entry{entries}, []int{0}, nil); err != nil {
			return nil, err
		}
		return &Written{Path: out, Files: []string{out}, Tensors: w.written, TotalSize: w.done, Notes: notes}, nil
	}
	return w.directory(out, entries, sizes)
}

type writeJob struct {
	ctx     context.Context
	produce Producer
	opts    WriteOptions
	total   int64
	done    int64
	written int // tensors written
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

// shardNames names the weight files of a plan of n shards.
func shardNames(stem string, n int) []string {
	if n == 1 {
		return []string{stem + ".safetensors"}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%05d-of-%05d.safetensors", stem, i+1, n)
	}
	return names
}

func (w *writeJob) stem() string {
	if w.opts.WeightsName != "" {
		return w.opts.WeightsName
	}
	return "model"
}

// directory writes a model directory (or one part of it).
func (w *writeJob) directory(out string, entries []safetensors.Entry, sizes map[string]int64) (*Written, error) {
	limit := w.opts.MaxShardSize
	if limit <= 0 {
		limit = DefaultMaxShardSize
	}
	plan := planShards(entries, sizes, limit)
	names := shardNames(w.stem(), len(plan))
	for name := range w.opts.Files {
		if name != filepath.Base(name) || slices.Contains(names, name) || name == IndexFileName || strings.HasPrefix(name, ".") {
			return nil, fmt.Errorf("extra file %q: not a plain file name, or it would replace a weight file", name)
		}
	}
	shardSizes := make([]int64, len(plan))
	for i, s := range plan {
		for _, e := range s {
			shardSizes[i] += sizes[e.Name]
		}
	}
	mine := make([]int, len(plan))
	for i := range mine {
		mine[i] = i
	}
	dest := out
	if w.opts.Part.Active() {
		mine = AssignParts(shardSizes, w.opts.Part.N)[w.opts.Part.K-1]
		dest = filepath.Join(PartsDir(out), w.opts.Part.dirName())
		if err := os.MkdirAll(PartsDir(out), 0o755); err != nil {
			return nil, err
		}
	}
	fp, err := w.fingerprint(plan, names)
	if err != nil {
		return nil, err
	}
	pf := &planFile{Version: planVersion, Fingerprint: fp, Part: w.opts.Part.K, Parts: w.opts.Part.N,
		Shards: names, Mine: mine, Stem: w.stem()}
	if w.opts.State != nil {
		pf.Finalizer = w.opts.State.Finalizer
		if _, ok := lookupFinalizer(pf.Finalizer); !ok {
			return nil, fmt.Errorf("internal error: finalizer %q is not registered", pf.Finalizer)
		}
	}
	for _, s := range plan {
		pf.Entries = append(pf.Entries, entriesJSON(s))
	}

	// the staging directory: a resumed one, or a new one
	res := &Written{Path: dest}
	var d *fsafe.Dir
	doneShards := map[int]bool{}
	if w.opts.Resume {
		var notes []string
		d, doneShards, notes, err = resumeDir(dest, pf, plan, w.opts.Part.Active() || w.opts.Force)
		res.Notes = append(res.Notes, notes...)
		if err != nil {
			return nil, err
		}
	}
	notes, err := fsafe.CleanStale(dest, false)
	res.Notes = append(res.Notes, notes...)
	if err != nil {
		if d != nil {
			d.Keep()
		}
		return nil, err
	}
	if d == nil {
		if d, err = fsafe.CreateDir(dest, w.opts.Part.Active() || w.opts.Force); err != nil {
			return nil, err
		}
	}
	if w.opts.Resume {
		d.Resumable()
	}
	committed := false
	defer func() {
		if committed {
			return
		}
		if w.opts.Resume {
			d.Keep()
		} else {
			d.Abort()
		}
	}()
	if err := writePlan(d.Path, pf); err != nil {
		return nil, err
	}
	// companion files first: a missing one fails before the long part
	filesDir := d.Path
	if w.opts.Part.Active() {
		filesDir = filepath.Join(d.Path, metaDir, "files")
		if err := os.MkdirAll(filesDir, 0o755); err != nil {
			return nil, err
		}
	}
	if err := w.companions(filesDir); err != nil {
		return nil, err
	}
	var todo []int
	for _, i := range mine {
		if doneShards[i] {
			res.Resumed++
			w.total -= shardSizes[i]
		} else {
			todo = append(todo, i)
		}
	}
	if res.Resumed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("resumed %s: %d of %d shards were complete", d.Path, res.Resumed, len(mine)))
	}
	paths := make([]string, len(plan))
	for i, n := range names {
		paths[i] = filepath.Join(d.Path, n)
	}
	after := func(i int, sw *safetensors.Writer) error { return w.shardDone(d.Path, names[i], plan[i], sw) }
	if err := w.shards(paths, plan, todo, after); err != nil {
		if w.opts.Resume && len(todo) < len(mine) || w.opts.Resume && w.done > 0 {
			return nil, fmt.Errorf("%w (completed shards are kept in %s: run the same command with --resume to continue)", err, d.Path)
		}
		return nil, err
	}
	for _, i := range mine {
		res.Files = append(res.Files, filepath.Join(dest, names[i]))
	}
	if w.opts.Part.Active() {
		if err := w.ctx.Err(); err != nil {
			return nil, err
		}
		if err := d.Commit(); err != nil {
			return nil, err
		}
		committed = true
		res.Tensors, res.TotalSize = w.written, w.done
		return res, nil
	}
	stateDirs := make([]string, len(plan))
	for i, n := range names {
		stateDirs[i] = filepath.Join(d.Path, metaDir, "state", n)
	}
	if err := complete(d.Path, out, pf.Stem, names, pf.Finalizer, stateDirs); err != nil {
		return nil, err
	}
	if w.opts.Finalize != nil {
		if err := w.opts.Finalize(d.Path); err != nil {
			return nil, err
		}
	}
	if err := os.RemoveAll(filepath.Join(d.Path, metaDir)); err != nil {
		return nil, err
	}
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.Commit(); err != nil {
		return nil, err
	}
	committed = true
	res.Tensors, res.TotalSize = w.written, w.done
	return res, nil
}

// companions copies CopyFiles and writes Files into dir.
func (w *writeJob) companions(dir string) error {
	for _, src := range w.opts.CopyFiles {
		name := filepath.Base(src)
		if _, replaced := w.opts.Files[name]; replaced {
			continue
		}
		if err := copyFile(src, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(w.opts.Files)) {
		if err := writeFileSync(filepath.Join(dir, name), w.opts.Files[name]); err != nil {
			return err
		}
	}
	return nil
}

// complete adds what a directory output needs once every shard is in dir:
// the index (built from the shards' headers, so it lists exactly what they
// hold) and the finalizer's files, from every shard's state.
func complete(dir, out, stem string, names []string, finalizer string, stateDirs []string) error {
	if len(names) > 1 {
		ix, err := indexOf(dir, names)
		if err != nil {
			return err
		}
		if err := writeFileSync(filepath.Join(dir, stem+".safetensors.index.json"), encodeIndex(ix)); err != nil {
			return err
		}
	}
	if finalizer != "" {
		f, ok := lookupFinalizer(finalizer)
		if !ok {
			return fmt.Errorf("internal error: finalizer %q is not registered", finalizer)
		}
		if err := f(dir, out, stateDirs); err != nil {
			return err
		}
	}
	return nil
}

// indexOf builds the index of the shards in dir from their headers.
func indexOf(dir string, names []string) (*Index, error) {
	ix := &Index{WeightMap: map[string]string{}}
	for _, n := range names {
		h, err := safetensors.ReadHeaderFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		for _, t := range h.Tensors {
			ix.WeightMap[t.Name] = n
		}
		ix.TotalSize += h.DataSize
	}
	return ix, nil
}

// shardDone records what a resumed or split write needs of a finished
// shard: its size and checksum, and the producer's state for its tensors.
func (w *writeJob) shardDone(dir, name string, entries []safetensors.Entry, sw *safetensors.Writer) error {
	st, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	if w.opts.State != nil && w.opts.State.Save != nil {
		final := filepath.Join(dir, metaDir, "state", name)
		tmp := final + ".tmp"
		os.RemoveAll(tmp)
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			return err
		}
		if err := w.opts.State.Save(tmp, entries); err != nil {
			return err
		}
		os.RemoveAll(final)
		if err := os.Rename(tmp, final); err != nil {
			return err
		}
	}
	if err := writeShardRecord(dir, name, shardRecord{Size: st.Size(), CRC: sw.DataCRC(), HasCRC: w.opts.Part.Active()}); err != nil {
		return err
	}
	faultinject.ShardDone()
	return nil
}

// shards writes the shard files listed in todo (indexes into paths and
// plan), producing tensors (or chunks of tensors, see WriteOptions.Chunks)
// concurrently, up to Workers at a time and MaxMemory bytes ahead of the
// writer, and writing them in file order. Each shard file is created when
// the writer reaches it and closed before the next is created, so a model
// of thousands of shards holds one file open at a time. after, if set, is
// called once a shard file is complete.
func (w *writeJob) shards(paths []string, plan [][]safetensors.Entry, todo []int, after func(int, *safetensors.Writer) error) error {
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	var order []item
	for _, i := range todo {
		fileOrder := slices.Clone(plan[i])
		safetensors.SortEntries(fileOrder)
		if len(fileOrder) == 0 {
			order = append(order, item{shard: i, empty: true})
		}
		for _, e := range fileOrder {
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
	var sw *safetensors.Writer
	defer func() {
		if sw != nil {
			sw.Abort()
		}
	}()
	singleFile := len(paths) == 1 && IsSingleFile(paths[0])
	for i, it := range order {
		var r produced
		select {
		case r = <-results[i%window]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if sw == nil && r.err == nil {
			co := safetensors.CreateOptions{MetadataFor: w.opts.MetadataFor, AllowNonFinite: true, // checked by the workers
				Checksum: w.opts.Part.Active(), NoReplace: singleFile && !w.opts.Force}
			sw, r.err = safetensors.CreateWith(paths[it.shard], plan[it.shard], w.opts.Metadata, co)
		}
		skip := r.err == nil && r.t == nil && r.chunk == nil && !it.empty
		if r.err == nil {
			r.err = safetensors.Guard("", it.e.Name, func() error {
				switch {
				case it.empty:
					return nil
				case it.fill != nil:
					return sw.WriteChunk(it.e.Name, r.chunk)
				case skip && !it.e.Optional:
					return fmt.Errorf("tensor %q: producer returned no tensor", it.e.Name)
				case skip:
					return sw.Skip(it.e.Name)
				}
				return sw.Write(r.t)
			})
		}
		if r.done != nil {
			r.done()
		}
		mem.release(it.cost)
		if r.err != nil {
			return r.err
		}
		switch {
		case it.empty:
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
			if after != nil {
				if err := after(it.shard, sw); err != nil {
					return err
				}
			}
			sw = nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

type produced struct {
	t     *tensors.Tensor
	chunk []byte // the bytes of a chunk item
	done  func()
	err   error
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
	empty bool      // a shard without tensors
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

// run produces one item on a worker goroutine. Its reads of mapped inputs
// run inside safetensors.Guard, so a memory fault (an input truncated while
// mapped) becomes a *safetensors.FaultError naming the file and tensor; a
// panic becomes a *fault.PanicError. Neither crashes the process. The
// encoded bytes are checked for NaN and Inf here, in parallel, unless
// AllowNonFinite.
func (w *writeJob) run(ctx context.Context, it item) (r produced) {
	if it.empty {
		return produced{}
	}
	var buf []byte
	raised := fault.Catch(func() {
		err := safetensors.Guard("", it.e.Name, func() error {
			if it.fill == nil {
				t, done, err := w.produce(ctx, it.e)
				r = produced{t: t, done: done}
				if err != nil || t == nil || w.opts.AllowNonFinite {
					return err
				}
				if t.Name != it.e.Name || t.DType != it.e.DType {
					return fmt.Errorf("internal error: produced tensor %q (%s) for entry %q (%s)", t.Name, t.DType, it.e.Name, it.e.DType)
				}
				return CheckFinite(it.e, 0, t.Data)
			}
			buf = chunkPool.Get(int(it.size))
			err := it.fill(ctx, it.off, buf)
			if err == nil && !w.opts.AllowNonFinite {
				err = CheckFinite(it.e, it.off, buf)
			}
			if err != nil {
				return err
			}
			r = produced{chunk: buf, done: func() { chunkPool.Put(buf) }}
			return nil
		})
		if err != nil {
			if it.fill != nil && !errors.As(err, new(*NonFiniteError)) && !strings.Contains(err.Error(), it.e.Name) {
				err = fmt.Errorf("tensor %q: %w", it.e.Name, err)
			}
			r.err = err
		}
	})
	switch p := raised.(type) {
	case nil:
	case *fault.PanicError:
		r.err = p
	case *fault.Failure:
		r.err = p.Err
	case fault.Addr: // Guard turns faults into errors; kept for safety
		r.err = safetensors.FaultAt(p.Addr(), "", it.e.Name)
	default:
		r.err = &fault.PanicError{Value: p}
	}
	if r.err != nil {
		if r.done != nil {
			r.done()
		}
		if buf != nil && r.chunk == nil {
			chunkPool.Put(buf)
		}
		return produced{err: r.err}
	}
	return r
}

var chunkPool tensors.BufferPool

// CheckOutput refuses an output path that is one of the inputs, a directory
// that contains one, or a path inside one (compared by device and inode, so
// links and bind mounts are seen through), one that exists and is not a
// regular file or directory, and an existing output unless force is set.
func CheckOutput(out string, inputs []string, force bool) error {
	return fsafe.CheckOutput(out, inputs, force)
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

// copyFile copies a regular file (never a FIFO or a device: see fsafe.Open)
// keeping its permission bits.
func copyFile(src, dst string) error {
	in, err := fsafe.Open(src)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
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
