//go:build amd64 && !purego

package merge

// The AVX-512 kernels of della_kern.go (della_amd64.s): n > 0, a multiple
// of 8 (of 32 for bucketMembersx512).

//go:noescape
func keyRangex512(x, b *float64, n int) (top, lowm1 uint64)

//go:noescape
func bucketizex512(bk *uint16, x, b *float64, n int, sh, base uint64)

//go:noescape
func decideBitsx512(bk *uint16, n int, p *decideParams) (zc int64)

//go:noescape
func maskDeltax512(d, x, b *float64, n int, bits *byte, w, s float64)

//go:noescape
func absSumsMaskedx512(x, b *float64, n int, bits *byte) (before, after float64)

//go:noescape
func bucketMembersx512(out *int32, bk *uint16, n int, b uint16) int

//go:noescape
func bucketStartsx512(h *int32, nb, m int, line *rankLine, pk *uint64) (total int)

//go:noescape
func bucketCountsx(h *int32, bk *uint16, n int, mask uint64)
