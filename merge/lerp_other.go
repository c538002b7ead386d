//go:build !amd64 || purego

package merge

func lerpBF16(d, x, y []uint16, a, b float32) (int, bool) { return 0, false }

func lerp3BF16(d, x, y, z []uint16, a, b, c float32) (int, bool) { return 0, false }

func haveVectorKernel() bool { return false }
