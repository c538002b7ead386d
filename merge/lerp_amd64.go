//go:build amd64 && !purego

package merge

import "golang.org/x/sys/cpu"

//go:noescape
func lerpBF16AVX2(dst, x, y *uint16, n int, a, b float32) (flag int)

//go:noescape
func lerp3BF16AVX2(dst, x, y, z *uint16, n int, a, b, c float32) (flag int)

var haveAVX2 = cpu.X86.HasAVX2

// lerpBF16 computes d[i] = bf16(a*x[i] + b*y[i]) with AVX2 for the leading
// multiple of 8 elements, and reports how many it did and whether any value
// was not finite (then nothing can be trusted and the caller redoes it all).
func lerpBF16(d, x, y []uint16, a, b float32) (done int, nonFinite bool) {
	n := len(d) &^ 7
	if !haveAVX2 || n == 0 {
		return 0, false
	}
	return n, lerpBF16AVX2(&d[0], &x[0], &y[0], n, a, b) != 0
}

// lerp3BF16 computes d[i] = bf16(((0 + a*x[i]) + b*y[i]) + c*z[i]) with
// AVX2 for the leading multiple of 8 elements, as lerpBF16.
func lerp3BF16(d, x, y, z []uint16, a, b, c float32) (done int, nonFinite bool) {
	n := len(d) &^ 7
	if !haveAVX2 || n == 0 {
		return 0, false
	}
	return n, lerp3BF16AVX2(&d[0], &x[0], &y[0], &z[0], n, a, b, c) != 0
}

func haveVectorKernel() bool { return haveAVX2 }
