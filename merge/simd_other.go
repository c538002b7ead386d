//go:build !amd64 || purego

package merge

// haveAVX512 is false: the Go code of simd.go does everything.
const haveAVX512 = false

func decodeBF16x512(dst *float64, src *uint16, n int) int                 { panic("no AVX-512") }
func decodeF32x512(dst *float64, src *uint32, n int) int                  { panic("no AVX-512") }
func encodeBF16x512(dst *uint16, src *float64, n int)                     { panic("no AVX-512") }
func keepMagx512(d, x, b *float64, n int, p *keepMagParams)               { panic("no AVX-512") }
func keepRandx512(d, x, b *float64, n int, p *keepRandParams)             { panic("no AVX-512") }
func keepCrumbsx512(d, x, b *float64, n int, p *keepCrumbsParams)         { panic("no AVX-512") }
func rangeCountx512(keys *uint64, n int, p *rangeParams, hits *uint8) int { panic("no AVX-512") }
func sceCombine2x512(out, x0, x1, b *float64, n int, p *combineParams)    { panic("no AVX-512") }
func sceKeys2x512(keys *uint64, x0, x1, b *float64, n int)                { panic("no AVX-512") }
func consensus2x512(out, d0, d1, b *float64, n int, p *combineParams)     { panic("no AVX-512") }
func linear2x512(out, d0, d1, b *float64, n int, p *combineParams)        { panic("no AVX-512") }
func lerpx512(out, x, y *float64, n int, s0, s1 float64)                  { panic("no AVX-512") }
func consensusNx512(out *float64, ds **float64, ws *float64, m int, b *float64, n int, p *combineParams) {
	panic("no AVX-512")
}
func linearNx512(out *float64, ds **float64, m int, b *float64, n int, p *combineParams) {
	panic("no AVX-512")
}

func absSumsx512(x, b, d *float64, n int) (before, after float64) { panic("no AVX-512") }
func scaleByx512(d *float64, n int, s float64)                    { panic("no AVX-512") }
