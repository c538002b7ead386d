// Copyright ©2025 The wtool Authors.

//go:build !purego

package linalg

import "golang.org/x/sys/cpu"

// Assembly micro-kernels; see kernels_amd64.s for their contract.

//go:noescape
func sgemmKernel12x32AVX512(k int, a, b, c *float32, ldc int, beta float32)

//go:noescape
func dgemmKernel12x16AVX512(k int, a, b, c *float64, ldc int, beta float64)

//go:noescape
func sgemmKernel6x16AVX2(k int, a, b, c *float32, ldc int, beta float32)

//go:noescape
func dgemmKernel6x8AVX2(k int, a, b, c *float64, ldc int, beta float64)

// Transposing pack kernels; see pack_amd64.s. They need AVX only.

//go:noescape
func transpose8x8F32(dst *float32, w int, src *float32, ld int, kb int, alpha float32)

//go:noescape
func transpose4x8F32(dst *float32, w int, src *float32, ld int, kb int, alpha float32)

//go:noescape
func transpose4x4F64(dst *float64, w int, src *float64, ld int, kb int, alpha float64)

//go:noescape
func splitRowF32(dst *float32, w, pstride int, src *float32, npieces, ld int, alpha float32)

//go:noescape
func splitRowF64(dst *float64, w, pstride int, src *float64, npieces, ld int, alpha float64)

var (
	trans32 = []transKernel[float32]{{8, 8, transpose8x8F32}, {4, 8, transpose4x8F32}}
	trans64 = []transKernel[float64]{{4, 4, transpose4x4F64}}
)

var (
	hasAVX2FMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasAVX512  = hasAVX2FMA && cpu.X86.HasAVX512F
)

// bestLevel returns the fastest kernel level supported by this CPU.
func bestLevel() level {
	switch {
	case hasAVX512:
		return levelAVX512
	case hasAVX2FMA:
		return levelAVX2
	}
	return levelGonum
}

// levelSupported reports whether kernels of level l can run on this CPU.
func levelSupported(l level) bool {
	switch l {
	case levelGonum, levelGo:
		return true
	case levelAVX2:
		return hasAVX2FMA
	case levelAVX512:
		return hasAVX512
	}
	return false
}

// archConfigs returns the blocked-GEMM configurations for an assembly level.
// The block sizes were tuned on an AMD Zen 5 (48 KiB L1d, 1 MiB L2 per core);
// performance is flat within a few percent for kc in 192..384, nc in
// 192..768 and mc in 768..3072.
func archConfigs(l level) (*config[float32], *config[float64]) {
	var c32 *config[float32]
	var c64 *config[float64]
	switch l {
	case levelAVX512:
		c32 = newConfig[float32](12, 32, 256, 1536, 384, sgemmKernel12x32AVX512)
		c64 = newConfig[float64](12, 16, 256, 1536, 192, dgemmKernel12x16AVX512)
	case levelAVX2:
		c32 = newConfig[float32](6, 16, 256, 1536, 384, sgemmKernel6x16AVX2)
		c64 = newConfig[float64](6, 8, 256, 1536, 192, dgemmKernel6x8AVX2)
	default:
		return nil, nil
	}
	c32.trans, c64.trans = trans32, trans64
	c32.split, c64.split = splitRowF32, splitRowF64
	return c32, c64
}
