//go:build !amd64 || purego

package bfgemm

const available = false

func kernel12x32(kq int, a, b *uint32, c *float32, ldc int, accumulate bool) {
	panic("bfgemm: no kernel on this platform")
}
