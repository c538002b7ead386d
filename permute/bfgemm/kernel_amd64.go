//go:build !purego

package bfgemm

import "golang.org/x/sys/cpu"

//go:noescape
func kernel12x32(kq int, a, b *uint32, c *float32, ldc int, accumulate bool)

var available = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BF16
