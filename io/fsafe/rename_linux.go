package fsafe

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// errUnsupported: the file system cannot exchange or rename without
// replacing atomically.
var errUnsupported = errors.New("not supported by the file system")

func unsupported(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)
}

// renameNoReplace renames tmp to dest unless dest exists (fs.ErrExist).
func renameNoReplace(tmp, dest string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dest, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return fs.ErrExist
	case unsupported(err):
		if _, err := os.Lstat(dest); err == nil {
			return fs.ErrExist
		}
		return rename(tmp, dest)
	}
	return fmt.Errorf("renaming the finished output to %s: %w", dest, err)
}

// exchange swaps tmp and dest atomically (renameat2 RENAME_EXCHANGE).
func exchange(tmp, dest string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dest, unix.RENAME_EXCHANGE)
	if err != nil && unsupported(err) {
		return errUnsupported
	}
	return err
}
