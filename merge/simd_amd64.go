//go:build amd64 && !purego

package merge

import "golang.org/x/sys/cpu"

// haveAVX512 enables the AVX-512 kernels of simd_amd64.s.
var haveAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL

//go:noescape
func decodeBF16x512(dst *float64, src *uint16, n int) (bad int)

//go:noescape
func decodeF32x512(dst *float64, src *uint32, n int) (bad int)

//go:noescape
func encodeBF16x512(dst *uint16, src *float64, n int)

//go:noescape
func keepMagx512(d, x, b *float64, n int, p *keepMagParams)

//go:noescape
func keepRandx512(d, x, b *float64, n int, p *keepRandParams)

//go:noescape
func consensus2x512(out, d0, d1, b *float64, n int, p *combineParams)

//go:noescape
func linear2x512(out, d0, d1, b *float64, n int, p *combineParams)

//go:noescape
func lerpx512(out, x, y *float64, n int, s0, s1 float64)

//go:noescape
func consensusNx512(out *float64, ds **float64, ws *float64, m int, b *float64, n int, p *combineParams)

//go:noescape
func linearNx512(out *float64, ds **float64, m int, b *float64, n int, p *combineParams)

//go:noescape
func keepCrumbsx512(d, x, b *float64, n int, p *keepCrumbsParams)

//go:noescape
func rangeCountx512(keys *uint64, n int, p *rangeParams, hits *uint8) (above int)

//go:noescape
func sceCombine2x512(out, x0, x1, b *float64, n int, p *combineParams)

//go:noescape
func sceKeys2x512(keys *uint64, x0, x1, b *float64, n int)

//go:noescape
func absSumsx512(x, b, d *float64, n int) (before, after float64)

//go:noescape
func scaleByx512(d *float64, n int, s float64)
