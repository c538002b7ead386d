//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// On systems without mmap support here the file is read into memory.
func mapFile(f *os.File, size int64) ([]byte, error) {
	b := make([]byte, size)
	_, err := io.ReadFull(io.NewSectionReader(f, 0, size), b)
	return b, err
}

func unmapFile([]byte) error { return nil }

func releaseRange([]byte, int64, int64) {}

func populateRange([]byte, int64, int64) {}
