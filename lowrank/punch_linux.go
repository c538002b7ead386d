package lowrank

import (
	"os"

	"golang.org/x/sys/unix"
)

// punchHole frees the disk space of a byte range of f (a hint: errors, on
// file systems without hole punching, are ignored).
func punchHole(f *os.File, off, size int64) {
	_ = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, size)
}
