//go:build unix

package safetensors

import (
	"os"

	"golang.org/x/sys/unix"
)

func mapFile(f *os.File, size int64) ([]byte, error) {
	if size == 0 {
		return []byte{}, nil
	}
	return unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
}

func unmapFile(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.Munmap(b)
}

var pageSize = int64(os.Getpagesize())

// releaseRange drops the pages that lie entirely inside [start, end) from the
// process's resident set. For a shared read-only file mapping this loses
// nothing: the next access reads the page cache again.
func releaseRange(m []byte, start, end int64) {
	lo := (start + pageSize - 1) &^ (pageSize - 1)
	hi := end &^ (pageSize - 1)
	if hi > lo {
		_ = unix.Madvise(m[lo:hi], unix.MADV_DONTNEED)
	}
}

// populateRange maps the pages of [start, end) in one madvise call.
func populateRange(m []byte, start, end int64) {
	lo := start &^ (pageSize - 1)
	if end > lo {
		_ = unix.Madvise(m[lo:end], unix.MADV_POPULATE_READ)
	}
}
