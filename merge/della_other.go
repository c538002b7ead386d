//go:build !amd64 || purego

package merge

func keyRangex512(x, b *float64, n int) (top, lowm1 uint64)                      { panic("no AVX-512") }
func bucketizex512(bk *uint16, x, b *float64, n int, sh, base uint64)            { panic("no AVX-512") }
func decideBitsx512(bk *uint16, n int, p *decideParams) (zc int64)               { panic("no AVX-512") }
func maskDeltax512(d, x, b *float64, n int, bits *byte, w, s float64)            { panic("no AVX-512") }
func absSumsMaskedx512(x, b *float64, n int, bits *byte) (before, after float64) { panic("no AVX-512") }
func bucketMembersx512(out *int32, bk *uint16, n int, b uint16) int              { panic("no AVX-512") }
func bucketStartsx512(h *int32, nb, m int, line *rankLine, pk *uint64) (total int) {
	panic("no AVX-512")
}
func bucketCountsx(h *int32, bk *uint16, n int, mask uint64) { panic("no AVX-512") }
