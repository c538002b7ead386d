package fsafe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// TempPrefix returns the directory in which temporaries of dest are created
// and the prefix of their names: ".NAME.tmp-". Everything wtool writes
// passes through such a name.
func TempPrefix(dest string) (dir, prefix string) {
	dir, base := filepath.Split(filepath.Clean(dest))
	if dir == "" {
		dir = "."
	}
	return dir, "." + base + ".tmp-"
}

// live tracks the temporaries of this process, so that an emergency exit
// (a second Ctrl-C, a stuck system call) can remove them.
var live = struct {
	sync.Mutex
	temps map[*temp]struct{}
}{temps: map[*temp]struct{}{}}

// commitMu is held while outputs are renamed into place, so an emergency
// exit never interrupts a replacement halfway.
var commitMu sync.Mutex

// temp is a locked temporary file or directory.
type temp struct {
	path string
	lock *os.File // holds the flock while the temporary lives
	keep bool     // an emergency exit leaves it (resumable)
}

func newTemp(path string, lock *os.File) (*temp, error) {
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	t := &temp{path: path, lock: lock}
	live.Lock()
	live.temps[t] = struct{}{}
	live.Unlock()
	return t, nil
}

func (t *temp) release() {
	live.Lock()
	delete(live.temps, t)
	live.Unlock()
	if t.lock != nil {
		t.lock.Close()
		t.lock = nil
	}
}

// RemoveLiveTemps removes every temporary this process holds, except
// resumable ones, waiting for a replacement in progress to finish first. It
// is for an emergency exit (the process is about to end without unwinding).
func RemoveLiveTemps() {
	commitMu.Lock() // never released: the process is ending
	live.Lock()
	defer live.Unlock()
	for t := range live.temps {
		if !t.keep {
			os.RemoveAll(t.path)
		}
	}
}

// File is an output file being written: the embedded *os.File is a locked
// temporary next to the destination, which Commit renames into place.
type File struct {
	*os.File
	dest  string
	force bool
	t     *temp
	done  bool
}

// CreateFile starts writing the file dest atomically: it returns a locked
// temporary ".NAME.tmp-*" in dest's directory (created if needed). Commit
// syncs it and renames it to dest, replacing an existing dest only with
// force; Abort removes it.
func CreateFile(dest string, force bool) (*File, error) {
	dir, prefix := TempPrefix(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return nil, err
	}
	t, err := newTemp(f.Name(), f)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	t.lock = nil // the file itself holds the lock; closing it releases it
	return &File{File: f, dest: dest, force: force, t: t}, nil
}

// Commit syncs the temporary file, makes it readable (0644), and renames it
// to the destination.
func (f *File) Commit() error {
	if f.done {
		return errors.New(f.dest + ": already committed or aborted")
	}
	f.done = true
	err := f.File.Chmod(0o644)
	if err == nil {
		err = f.File.Sync()
	}
	if err == nil {
		err = replace(f.File.Name(), f.dest, f.force, false)
	}
	f.File.Close()
	f.t.release()
	if err != nil {
		os.Remove(f.File.Name())
		return err
	}
	return nil
}

// Abort closes and removes the temporary file; dest is untouched.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
	f.t.release()
}

// WriteFile writes data to dest atomically (see CreateFile).
func WriteFile(dest string, data []byte, force bool) error {
	f, err := CreateFile(dest, force)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("%s: %w", dest, err)
	}
	return f.Commit()
}

// Dir is an output directory being written: Path is a locked temporary
// directory next to the destination, which Commit puts in its place.
type Dir struct {
	// Path is the temporary directory to fill.
	Path  string
	dest  string
	force bool
	t     *temp
	done  bool
}

// CreateDir starts writing the directory dest atomically: it creates a
// locked temporary directory ".NAME.tmp-*" beside it (its parent is created
// if needed).
func CreateDir(dest string, force bool) (*Dir, error) {
	dir, prefix := TempPrefix(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p, err := os.MkdirTemp(dir, prefix)
	if err != nil {
		return nil, err
	}
	os.Chmod(p, 0o755)
	d, err := AdoptDir(p, dest, force)
	if err != nil {
		os.RemoveAll(p)
		return nil, err
	}
	return d, nil
}

// AdoptDir takes over an existing temporary directory of dest (one a
// killed run left, to resume it): it is locked and committed like one from
// CreateDir. It fails if another live process holds it.
func AdoptDir(tempPath, dest string, force bool) (*Dir, error) {
	lock, err := os.Open(tempPath)
	if err != nil {
		return nil, err
	}
	t, err := newTemp(tempPath, lock)
	if err != nil {
		lock.Close()
		return nil, err
	}
	return &Dir{Path: tempPath, dest: dest, force: force, t: t}, nil
}

// Resumable marks the temporary directory as one to keep when the process
// is interrupted (an emergency exit) or its Commit fails, for a later
// resume.
func (d *Dir) Resumable() { d.t.keep = true }

// Commit syncs the directory and puts it at the destination: a plain
// rename when nothing is there, an atomic exchange with an existing
// destination (replaced only with force), whose old contents are then
// removed. A kill at any moment leaves either the old or the new output at
// the destination, never nothing.
func (d *Dir) Commit() error {
	if d.done {
		return errors.New(d.dest + ": already committed or aborted")
	}
	d.done = true
	syncPath(d.Path)
	err := replace(d.Path, d.dest, d.force, true)
	d.t.release()
	if err != nil && !d.t.keep { // a resumable directory stays for the next attempt
		os.RemoveAll(d.Path)
	}
	return err
}

// Abort removes the temporary directory; dest is untouched.
func (d *Dir) Abort() {
	if d.done {
		return
	}
	d.done = true
	os.RemoveAll(d.Path)
	d.t.release()
}

// Keep unlocks the temporary directory and leaves it in place, so that a
// later run can resume from what it holds; dest is untouched.
func (d *Dir) Keep() {
	if d.done {
		return
	}
	d.done = true
	d.t.release()
}

// replace renames tmp to dest. Without force an existing dest is an
// *ExistsError (checked atomically where the kernel allows, with
// RENAME_NOREPLACE). With force an existing dest is replaced: a file by
// rename(2), which is atomic; a directory (or a file replaced by a
// directory) by an atomic exchange, after which tmp holds the old output
// and is removed. On file systems without the exchange, dest is first moved
// to tmp+".old", and CleanStale puts it back if the process dies before the
// second rename.
func replace(tmp, dest string, force, isDir bool) error {
	commitMu.Lock()
	defer commitMu.Unlock()
	defer syncPath(filepath.Dir(filepath.Clean(dest)))
	if !force {
		err := renameNoReplace(tmp, dest)
		if errors.Is(err, fs.ErrExist) {
			return &ExistsError{Path: dest}
		}
		return err
	}
	st, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return rename(tmp, dest)
	}
	if err != nil {
		return err
	}
	if !isDir && !st.IsDir() {
		return rename(tmp, dest) // atomic replacement of a file
	}
	if err := exchangeHook(tmp, dest); err == nil {
		return os.RemoveAll(tmp) // the old output
	} else if !errors.Is(err, errUnsupported) {
		return fmt.Errorf("replacing %s: %w", dest, err)
	}
	old := tmp + ".old"
	if err := os.Rename(dest, old); err != nil {
		return fmt.Errorf("replacing %s: %w", dest, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Rename(old, dest)
		return fmt.Errorf("replacing %s: %w", dest, err)
	}
	return os.RemoveAll(old)
}

func rename(tmp, dest string) error {
	if err := os.Rename(tmp, dest); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			return fmt.Errorf("renaming the finished output to %s: %w", dest, le.Err)
		}
		return err
	}
	return nil
}

func syncPath(p string) {
	if f, err := os.Open(p); err == nil {
		f.Sync()
		f.Close()
	}
}

// CleanStale finds the temporaries next to dest that no live process holds
// (left by a run that was killed) and removes them, or with keep leaves
// them. A destination that a killed replacement left missing is restored
// from its ".old" copy first. The notes say what was done.
func CleanStale(dest string, keep bool) (notes []string, err error) {
	stale, err := StaleTemps(dest)
	if err != nil {
		return nil, err
	}
	if len(stale) == 0 {
		return nil, nil
	}
	if _, err := os.Lstat(dest); errors.Is(err, fs.ErrNotExist) {
		for _, s := range stale {
			if strings.HasSuffix(s, ".old") {
				commitMu.Lock()
				err := os.Rename(s, dest)
				commitMu.Unlock()
				if err != nil {
					return notes, fmt.Errorf("restoring %s from %s (left by an interrupted replacement): %w", dest, s, err)
				}
				notes = append(notes, fmt.Sprintf("restored %s from %s, left by an interrupted replacement", dest, s))
				break
			}
		}
	}
	if keep {
		return notes, nil
	}
	for _, s := range stale {
		if _, err := os.Lstat(s); err != nil {
			continue // restored above
		}
		if err := removeIfStale(s); err != nil {
			return notes, err
		}
		notes = append(notes, fmt.Sprintf("removed %s, left by an interrupted run", s))
	}
	return notes, nil
}

// StaleTemps lists the temporaries of dest (".NAME.tmp-*" beside it) that
// no live process holds, sorted by name.
func StaleTemps(dest string) ([]string, error) {
	dir, prefix := TempPrefix(dest)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() && !e.Type().IsRegular() {
			continue
		}
		if held(p) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// held reports whether a live process holds the lock of temporary p.
func held(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
}

// removeIfStale removes p while holding its lock, so a process that took it
// over in the meantime is not robbed.
func removeIfStale(p string) error {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil // taken over: not stale any more
	}
	return os.RemoveAll(p)
}

// CreateTemp creates a locked scratch file beside dest, named like dest's
// temporaries (".NAME.tmp-PURPOSE-*"), so that one a killed run leaves is
// cleaned like them. Remove it with RemoveTemp.
func CreateTemp(dest, purpose string) (*os.File, error) {
	dir, prefix := TempPrefix(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, prefix+purpose+"-*")
	if err != nil {
		return nil, err
	}
	t, err := newTemp(f.Name(), f)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	t.lock = nil
	scratch.Lock()
	scratch.m[f] = t
	scratch.Unlock()
	return f, nil
}

var scratch = struct {
	sync.Mutex
	m map[*os.File]*temp
}{m: map[*os.File]*temp{}}

// RemoveTemp closes and removes a file from CreateTemp.
func RemoveTemp(f *os.File) {
	scratch.Lock()
	t := scratch.m[f]
	delete(scratch.m, f)
	scratch.Unlock()
	f.Close()
	os.Remove(f.Name())
	if t != nil {
		t.release()
	}
}

// exchangeHook is exchange, replaceable by tests (to run the fallback for
// file systems without RENAME_EXCHANGE, and to stop between its renames).
var exchangeHook = exchange
