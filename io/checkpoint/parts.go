package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Part says which of N independent parts of a split write this process is.
type Part struct{ K, N int }

// ParsePart parses "K/N" (1 <= K <= N).
func ParsePart(s string) (Part, error) {
	k, n, ok := strings.Cut(s, "/")
	p := Part{}
	var err1, err2 error
	p.K, err1 = strconv.Atoi(strings.TrimSpace(k))
	p.N, err2 = strconv.Atoi(strings.TrimSpace(n))
	if !ok || err1 != nil || err2 != nil {
		return Part{}, fmt.Errorf("part %q: want K/N, such as 2/8", s)
	}
	return p, p.Validate()
}

// Active reports whether the write is split into parts.
func (p Part) Active() bool { return p.N > 0 }

// Validate checks 1 <= K <= N.
func (p Part) Validate() error {
	if p.N < 1 || p.K < 1 || p.K > p.N || p.N > 99999 {
		return fmt.Errorf("part %d/%d: want K/N with 1 <= K <= N <= 99999", p.K, p.N)
	}
	return nil
}

func (p Part) String() string { return fmt.Sprintf("%d/%d", p.K, p.N) }

func (p Part) dirName() string { return fmt.Sprintf("part-%05d-of-%05d", p.K, p.N) }

var partDirRE = regexp.MustCompile(`^part-(\d{5})-of-(\d{5})$`)

// PartsDir is where the parts of a split write of out are staged until
// Finalize assembles out: OUT.parts beside it.
func PartsDir(out string) string { return filepath.Clean(out) + ".parts" }

// AssignParts splits shards (their sizes in bytes, in order) into n
// contiguous runs balanced by bytes: shard i goes to the part whose share
// of the total holds the middle of the shard. The result lists the shard
// indexes of each part; a part may get none when there are fewer shards
// than parts.
func AssignParts(sizes []int64, n int) [][]int {
	var total int64
	for _, s := range sizes {
		total += s
	}
	out := make([][]int, n)
	var before int64
	for i, s := range sizes {
		var k int
		if total > 0 {
			mid := float64(before) + float64(s)/2
			k = int(mid * float64(n) / float64(total))
		} else {
			k = i * n / len(sizes)
		}
		k = min(max(k, 0), n-1)
		out[k] = append(out[k], i)
		before += s
	}
	return out
}

// A FinalizeFunc completes a directory output once all its shards are in
// dir (a staging directory that becomes out): it writes the files that
// depend on everything computed (a report, a second weight file) from the
// state each shard's write saved (see State), given in shard order.
type FinalizeFunc func(dir, out string, states []string) error

// State carries what a producer computes besides tensors to the step that
// completes the output. After each shard file is complete, Save is called
// with an empty directory and the shard's entries, to store what the
// finalizer will need of those tensors; once every shard exists — in this
// process, or in Finalize for a write split into parts — the function
// registered as Finalizer is called with the output directory and every
// shard's state directory. A single run goes through the same two steps, so
// split, resumed and single runs give identical outputs.
type State struct {
	Finalizer string
	Save      func(dir string, shard []safetensors.Entry) error
}

var finalizers = struct {
	sync.Mutex
	m map[string]FinalizeFunc
}{m: map[string]FinalizeFunc{}}

// RegisterFinalizer makes a FinalizeFunc known under a name (a package's
// init does it), so that Finalize, run by another process, can call it.
func RegisterFinalizer(name string, f FinalizeFunc) {
	finalizers.Lock()
	defer finalizers.Unlock()
	if _, dup := finalizers.m[name]; dup {
		panic("checkpoint: finalizer " + name + " registered twice")
	}
	finalizers.m[name] = f
}

func lookupFinalizer(name string) (FinalizeFunc, bool) {
	finalizers.Lock()
	defer finalizers.Unlock()
	f, ok := finalizers.m[name]
	return f, ok
}

// metaDir is the hidden directory, inside a staging directory, holding what
// resuming and finalizing need: the plan, a record per finished shard, the
// shards' states, a part's companion files.
const metaDir = ".wtool"

const planVersion = 1

// planFile describes a staged write.
type planFile struct {
	Version     int           `json:"wtool_plan"`
	Fingerprint string        `json:"fingerprint"`
	Part        int           `json:"part,omitempty"`
	Parts       int           `json:"parts,omitempty"`
	Stem        string        `json:"stem"`
	Finalizer   string        `json:"finalizer,omitempty"`
	Shards      []string      `json:"shards"`
	Mine        []int         `json:"mine"`
	Entries     [][]entryJSON `json:"entries"`
}

type entryJSON struct {
	Name     string  `json:"name"`
	DType    string  `json:"dtype"`
	Shape    []int64 `json:"shape"`
	Bounded  bool    `json:"bounded,omitempty"`
	Optional bool    `json:"optional,omitempty"`
}

func entriesJSON(es []safetensors.Entry) []entryJSON {
	out := make([]entryJSON, len(es))
	for i, e := range es {
		out[i] = entryJSON{Name: e.Name, DType: e.DType.String(), Shape: e.Shape, Bounded: e.Bounded, Optional: e.Optional}
	}
	return out
}

func writePlan(dir string, pf *planFile) error {
	if err := os.MkdirAll(filepath.Join(dir, metaDir, "shards"), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(pf)
	if err != nil {
		return err
	}
	return writeFileSync(filepath.Join(dir, metaDir, "plan.json"), b)
}

func readPlan(dir string) (*planFile, error) {
	b, err := fsafe.ReadFile(filepath.Join(dir, metaDir, "plan.json"))
	if err != nil {
		return nil, err
	}
	pf := &planFile{}
	if err := json.Unmarshal(b, pf); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, metaDir, "plan.json"), err)
	}
	if pf.Version != planVersion {
		return nil, fmt.Errorf("%s: plan version %d (this wtool writes %d)", dir, pf.Version, planVersion)
	}
	if len(pf.Entries) != len(pf.Shards) {
		return nil, fmt.Errorf("%s: inconsistent plan", dir)
	}
	return pf, nil
}

// shardRecord is written once a shard file is complete.
type shardRecord struct {
	Size   int64  `json:"size"`
	CRC    uint32 `json:"crc32c"`
	HasCRC bool   `json:"has_crc,omitempty"`
}

func writeShardRecord(dir, name string, r shardRecord) error {
	b, _ := json.Marshal(r)
	return writeFileSync(filepath.Join(dir, metaDir, "shards", name+".json"), b)
}

func readShardRecord(dir, name string) (shardRecord, error) {
	var r shardRecord
	b, err := fsafe.ReadFile(filepath.Join(dir, metaDir, "shards", name+".json"))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
}

// fingerprint identifies the write: the caller's fingerprint, the plan,
// the metadata, and the content of every companion file.
func (w *writeJob) fingerprint(plan [][]safetensors.Entry, names []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "wtool plan %d\ncaller %q\nstem %q\nallow-nonfinite %v\n", planVersion, w.opts.Fingerprint, w.stem(), w.opts.AllowNonFinite)
	if w.opts.State != nil {
		fmt.Fprintf(h, "finalizer %q\n", w.opts.State.Finalizer)
	}
	for i, s := range plan {
		fmt.Fprintf(h, "shard %q\n", names[i])
		for _, e := range s {
			fmt.Fprintf(h, "%q %s %v %v %v\n", e.Name, e.DType, e.Shape, e.Bounded, e.Optional)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.opts.Metadata)) {
		fmt.Fprintf(h, "metadata %q %q\n", k, w.opts.Metadata[k])
	}
	for _, k := range slices.Sorted(maps.Keys(w.opts.Files)) {
		fmt.Fprintf(h, "file %q %x\n", k, sha256.Sum256(w.opts.Files[k]))
	}
	for _, src := range w.opts.CopyFiles {
		f, err := fsafe.Open(src)
		if err != nil {
			return "", fmt.Errorf("copying %s: %w", src, err)
		}
		c := sha256.New()
		_, err = io.Copy(c, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("copying %s: %w", src, err)
		}
		fmt.Fprintf(h, "copy %q %x\n", filepath.Base(src), c.Sum(nil))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// resumeDir looks beside dest for the staging directory of a killed write
// with the same plan, adopts it and returns the shards it completed (after
// checking each); what else it holds is removed.
func resumeDir(dest string, pf *planFile, plan [][]safetensors.Entry, force bool) (*fsafe.Dir, map[int]bool, []string, error) {
	stale, err := fsafe.StaleTemps(dest)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, s := range stale {
		if strings.HasSuffix(s, ".old") {
			continue
		}
		old, err := readPlan(s)
		if err != nil || old.Fingerprint != pf.Fingerprint || !slices.Equal(old.Mine, pf.Mine) {
			continue
		}
		d, err := fsafe.AdoptDir(s, dest, force)
		if err != nil {
			continue
		}
		done := map[int]bool{}
		keep := map[string]bool{metaDir: true}
		for _, i := range pf.Mine {
			name := pf.Shards[i]
			if verifyResumable(s, name, plan[i], pf.Finalizer != "") == nil {
				done[i] = true
				keep[name] = true
			} else {
				os.Remove(filepath.Join(s, metaDir, "shards", name+".json"))
				os.RemoveAll(filepath.Join(s, metaDir, "state", name))
			}
		}
		entries, _ := os.ReadDir(s)
		for _, e := range entries {
			if !keep[e.Name()] {
				os.RemoveAll(filepath.Join(s, e.Name()))
			}
		}
		return d, done, nil, nil
	}
	return nil, nil, []string{fmt.Sprintf("--resume: no interrupted run of %s with the same plan was found; starting from the beginning", dest)}, nil
}

// verifyResumable checks a shard a killed run completed: its record, its
// size, its header against the plan, and its state.
func verifyResumable(dir, name string, entries []safetensors.Entry, needState bool) error {
	rec, err := readShardRecord(dir, name)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != rec.Size {
		return fmt.Errorf("%s: %d bytes, %d when it was written", path, st.Size(), rec.Size)
	}
	if err := verifyShard(path, entries); err != nil {
		return err
	}
	if needState {
		if _, err := os.Stat(filepath.Join(dir, metaDir, "state", name)); err != nil {
			return err
		}
	}
	return nil
}

// verifyShard checks that a shard file is a valid safetensors file holding
// exactly the planned tensors (optional ones may be missing, bounded ones
// smaller).
func verifyShard(path string, entries []safetensors.Entry) error {
	h, err := safetensors.ReadHeaderFile(path)
	if err != nil {
		return err
	}
	byName := make(map[string]safetensors.Entry, len(entries))
	for _, e := range entries {
		byName[e.Name] = e
	}
	seen := 0
	for _, t := range h.Tensors {
		e, ok := byName[t.Name]
		if !ok {
			return fmt.Errorf("%s: tensor %q is not in the plan", path, t.Name)
		}
		seen++
		if t.DType != e.DType || len(t.Shape) != len(e.Shape) {
			return fmt.Errorf("%s: tensor %q is %s%v, the plan says %s%v", path, t.Name, t.DType, t.Shape, e.DType, e.Shape)
		}
		for j := range t.Shape {
			if t.Shape[j] > e.Shape[j] || (!e.Bounded && t.Shape[j] != e.Shape[j]) {
				return fmt.Errorf("%s: tensor %q has shape %v, the plan says %v", path, t.Name, t.Shape, e.Shape)
			}
		}
	}
	if seen < len(entries) {
		for _, e := range entries {
			if _, ok := h.Lookup(e.Name); !ok && !e.Optional {
				return fmt.Errorf("%s: tensor %q is missing", path, e.Name)
			}
		}
	}
	return nil
}

func planEntries(pf *planFile, i int) ([]safetensors.Entry, error) {
	out := make([]safetensors.Entry, len(pf.Entries[i]))
	for j, e := range pf.Entries[i] {
		dt, ok := tensors.ParseDType(e.DType)
		if !ok {
			return nil, fmt.Errorf("plan: unknown dtype %q", e.DType)
		}
		out[j] = safetensors.Entry{Name: e.Name, DType: dt, Shape: e.Shape, Bounded: e.Bounded, Optional: e.Optional}
	}
	return out, nil
}

// FinalizeOptions control Finalize.
type FinalizeOptions struct {
	// Force allows replacing an existing output.
	Force bool
	// Verify reads every shard and compares its checksum with the one its
	// part recorded while writing it (otherwise shards are checked by size
	// and header).
	Verify bool
	// Progress, if set, is called with the bytes verified so far and in
	// total.
	Progress func(done, total int64)
}

// PartError names a part of a split write that is missing or corrupt.
type PartError struct {
	Part Part
	Dir  string
	Err  error
}

func (e *PartError) Error() string { return fmt.Sprintf("part %s (%s): %v", e.Part, e.Dir, e.Err) }

func (e *PartError) Unwrap() error { return e.Err }

// Finalize assembles a directory output written in parts (WriteOptions.Part)
// from OUT.parts: it checks that every part is there, complete and written
// with the same plan and fingerprint (each shard's header against the plan,
// its size, and with Verify its checksum), moves the shards into a staging
// directory, writes the index, the companion files and the finalizer's
// files, and puts the result at out atomically (replacing an existing out
// only with Force); then removes OUT.parts. The result is byte-identical to
// a single-process write. An interrupted Finalize can be run again.
func Finalize(ctx context.Context, out string, o FinalizeOptions) (*Written, error) {
	root := PartsDir(out)
	dirEntries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no parts to finalize (run the command with --part K/N -o %s first)", root, out)
	}
	if err != nil {
		return nil, err
	}
	if err := CheckOutput(out, nil, true); err != nil {
		return nil, err
	}
	// the parts present
	parts := map[int]string{}
	n := 0
	for _, e := range dirEntries {
		m := partDirRE.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		k, _ := strconv.Atoi(m[1])
		nn, _ := strconv.Atoi(m[2])
		if n != 0 && nn != n {
			return nil, fmt.Errorf("%s: parts of different splits (%d and %d parts); remove the stale ones", root, n, nn)
		}
		n = nn
		parts[k] = filepath.Join(root, e.Name())
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no completed part (part-K-of-N directories) yet", root)
	}
	var problems []string
	for k := 1; k <= n; k++ {
		if _, ok := parts[k]; ok {
			continue
		}
		p := Part{k, n}
		hint := fmt.Sprintf("missing: run it with --part %s", p)
		if stale, _ := fsafe.StaleTemps(filepath.Join(root, p.dirName())); len(stale) > 0 {
			hint = fmt.Sprintf("incomplete (a run was killed: %s): run it again with --part %s --resume", stale[0], p)
		} else if entries, _ := os.ReadDir(root); slices.ContainsFunc(entries, func(e os.DirEntry) bool {
			return strings.HasPrefix(e.Name(), "."+p.dirName()+".tmp-")
		}) {
			hint = "still running (its staging directory is locked by a live process)"
		}
		problems = append(problems, fmt.Sprintf("part %s %s", p, hint))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s: %s", root, strings.Join(problems, "; "))
	}
	plans := map[int]*planFile{}
	for k := 1; k <= n; k++ {
		pf, err := readPlan(parts[k])
		if err != nil {
			return nil, &PartError{Part{k, n}, parts[k], err}
		}
		if pf.Part != k || pf.Parts != n {
			return nil, &PartError{Part{k, n}, parts[k], fmt.Errorf("its plan says part %d/%d", pf.Part, pf.Parts)}
		}
		if k > 1 && pf.Fingerprint != plans[1].Fingerprint {
			return nil, &PartError{Part{k, n}, parts[k], fmt.Errorf("written with other arguments or inputs than part 1/%d (plans differ)", n)}
		}
		plans[k] = pf
	}
	pf1 := plans[1]
	if _, err := os.Lstat(out); err == nil && !o.Force && !alreadyFinalized(out, pf1) {
		return nil, &fsafe.ExistsError{Path: out}
	}
	owner := make([]int, len(pf1.Shards))
	for k := 1; k <= n; k++ {
		for _, i := range plans[k].Mine {
			owner[i] = k
		}
	}
	final := filepath.Join(root, ".final")
	if err := os.MkdirAll(final, 0o755); err != nil {
		return nil, err
	}
	d, err := fsafe.AdoptDir(final, out, o.Force)
	if err != nil {
		return nil, fmt.Errorf("%s: another finalize of %s seems to be running: %w", final, out, err)
	}
	d.Resumable() // the shards moved into it must survive any failure
	committed := false
	defer func() {
		if !committed {
			d.Keep() // a rerun continues from here
		}
	}()
	// check every shard, where it is (its part, or already moved)
	var total int64
	located := make([]string, len(pf1.Shards))
	for i, name := range pf1.Shards {
		k := owner[i]
		entries, err := planEntries(pf1, i)
		if err != nil {
			return nil, err
		}
		src := filepath.Join(parts[k], name)
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
			if _, err2 := os.Stat(filepath.Join(final, name)); err2 == nil {
				src = filepath.Join(final, name)
			}
		}
		rec, err := readShardRecord(parts[k], name)
		if err == nil {
			var st os.FileInfo
			if st, err = os.Stat(src); err == nil && st.Size() != rec.Size {
				err = fmt.Errorf("%s has %d bytes, %d when it was written", name, st.Size(), rec.Size)
			}
		}
		if err == nil {
			err = verifyShard(src, entries)
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && alreadyFinalized(out, pf1) {
				d.Keep()
				committed = true
				if err := os.RemoveAll(root); err != nil {
					return nil, err
				}
				return &Written{Path: out, Notes: []string{fmt.Sprintf("%s was already finalized; removed %s", out, root)}}, nil
			}
			return nil, &PartError{Part{k, n}, parts[k], err}
		}
		located[i] = src
		total += rec.Size
		if o.Verify && !rec.HasCRC {
			return nil, &PartError{Part{k, n}, parts[k], fmt.Errorf("%s: no checksum was recorded", name)}
		}
	}
	if o.Verify {
		var done int64
		for i, src := range located {
			k := owner[i]
			rec, _ := readShardRecord(parts[k], pf1.Shards[i])
			crc, err := fileDataCRC(ctx, src, func(n int64) {
				if o.Progress != nil {
					o.Progress(done+n, total)
				}
			})
			if err != nil {
				return nil, &PartError{Part{k, n}, parts[k], err}
			}
			if crc != rec.CRC {
				return nil, &PartError{Part{k, n}, parts[k], fmt.Errorf("%s is corrupt: its data checksum is %08x, %08x when it was written", pf1.Shards[i], crc, rec.CRC)}
			}
			st, _ := os.Stat(src)
			done += st.Size()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// assemble
	res := &Written{Path: out}
	for i, src := range located {
		dst := filepath.Join(final, pf1.Shards[i])
		if src != dst {
			if err := os.Rename(src, dst); err != nil {
				return nil, err
			}
		}
		res.Files = append(res.Files, filepath.Join(out, pf1.Shards[i]))
		h, err := safetensors.ReadHeaderFile(dst)
		if err != nil {
			return nil, err
		}
		res.Tensors += len(h.Tensors)
		res.TotalSize += h.DataSize
	}
	files := filepath.Join(parts[1], metaDir, "files")
	fileEntries, err := os.ReadDir(files)
	if err != nil {
		return nil, err
	}
	for _, e := range fileEntries {
		if err := copyFile(filepath.Join(files, e.Name()), filepath.Join(final, e.Name())); err != nil {
			return nil, err
		}
	}
	stateDirs := make([]string, len(pf1.Shards))
	for i, name := range pf1.Shards {
		stateDirs[i] = filepath.Join(parts[owner[i]], metaDir, "state", name)
	}
	if err := complete(final, out, pf1.Stem, pf1.Shards, pf1.Finalizer, stateDirs); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.Commit(); err != nil {
		return nil, err
	}
	committed = true
	if err := os.RemoveAll(root); err != nil {
		return res, err
	}
	return res, nil
}

// alreadyFinalized reports whether out holds every shard of the plan (a
// finalize that was interrupted after putting the output in place).
func alreadyFinalized(out string, pf *planFile) bool {
	for i, name := range pf.Shards {
		entries, err := planEntries(pf, i)
		if err != nil || verifyShard(filepath.Join(out, name), entries) != nil {
			return false
		}
	}
	return true
}

// fileDataCRC computes the CRC-32C of a safetensors file's data section,
// checking ctx as it reads.
func fileDataCRC(ctx context.Context, path string, progress func(int64)) (uint32, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	raw, err := fsafe.Open(path)
	if err != nil {
		return 0, err
	}
	defer raw.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	buf := make([]byte, 8<<20)
	r := io.NewSectionReader(raw, f.Header.DataOffset, f.Header.DataSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		m, err := r.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		progress(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	return h.Sum32(), nil
}
