// Package fsafe is how wtool touches the file system safely: it opens inputs
// without ever blocking on a FIFO or reading a device, checks once per command
// that no output is, contains or sits inside an input (by device and inode,
// so symbolic links, hard links and bind mounts cannot hide an input), and
// commits every output atomically: a file or directory is written under a
// hidden temporary name next to its destination (.NAME.tmp-...), synced, and
// renamed into place, a directory replacing an older one by an atomic
// exchange. Temporaries are locked while their run lives; those of a killed
// run are found, reported and removed by the next run writing the same
// output (or resumed, see checkpoint.WriteOptions.Resume).
package fsafe

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// KindError reports a path that is neither a regular file nor a directory
// (a FIFO, a device, a socket), or a directory where a file is needed (or
// the reverse). wtool refuses such paths before opening them.
type KindError struct {
	Path string
	Role string // what the path was given as ("input", "--calib", "-o"), "" if unknown
	Mode fs.FileMode
	Want string // "a regular file", "a regular file or a directory", "a directory"
	// Output is set when the path was given as an output.
	Output bool
}

func (e *KindError) Error() string {
	role := ""
	if e.Role != "" {
		role = " (" + e.Role + ")"
	}
	return fmt.Sprintf("%s%s is %s, not %s", e.Path, role, describeMode(e.Mode), e.Want)
}

// describeMode names the type of a file for messages.
func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	}
	return "a special file"
}

// Open opens a regular file for reading. It never blocks: a FIFO, a device
// or a socket is refused with a *KindError without waiting for a writer (the
// file is opened non-blocking and checked before anything is read).
func Open(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if mode := modeOf(st.Mode); !mode.IsRegular() {
		unix.Close(fd)
		return nil, &KindError{Path: path, Mode: mode, Want: "a regular file"}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// ReadFile reads a whole regular file (see Open).
func ReadFile(path string) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// StatInput returns the file information of an input path (following
// symbolic links), refusing anything that is not a regular file or a
// directory with a *KindError. It does not open the path.
func StatInput(path string) (fs.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() && !st.IsDir() {
		return nil, &KindError{Path: path, Mode: st.Mode(), Want: "a regular file or a directory"}
	}
	return st, nil
}

// IsRegular reports whether path is a regular file (following links),
// without opening it.
func IsRegular(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func modeOf(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		return 0
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	case unix.S_IFLNK:
		return fs.ModeSymlink
	}
	return fs.ModeIrregular
}

// IsKindError reports whether err is (or wraps) a *KindError.
func IsKindError(err error) bool {
	var k *KindError
	return errors.As(err, &k)
}
