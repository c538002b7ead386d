//go:build !linux

package fsafe

import (
	"errors"
	"io/fs"
	"os"
)

var errUnsupported = errors.New("not supported by the file system")

// renameNoReplace renames tmp to dest unless dest exists (fs.ErrExist); the
// check and the rename are not atomic on this system.
func renameNoReplace(tmp, dest string) error {
	if _, err := os.Lstat(dest); err == nil {
		return fs.ErrExist
	}
	return rename(tmp, dest)
}

func exchange(tmp, dest string) error { return errUnsupported }
