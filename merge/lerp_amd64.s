//go:build amd64 && !purego

#include "textflag.h"

// func lerpBF16AVX2(dst, x, y *uint16, n int, a, b float32) (flag int)
// dst[i] = bf16(a*x[i] + b*y[i]) for i < n (n a multiple of 8), rounding to
// nearest even as the scalar code does (two products, one sum, float32).
// flag is 1 if any input or result is not finite (the caller then redoes the
// block with the scalar code, which reports or handles them).
TEXT ·lerpBF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS a+32(FP), Y10
	VBROADCASTSS b+36(FP), Y11
	MOVL $0x7f800000, AX
	MOVQ AX, X12
	VPBROADCASTD X12, Y12          // exponent mask
	MOVL $1, AX
	MOVQ AX, X13
	VPBROADCASTD X13, Y13          // 1
	MOVL $0x7fff, AX
	MOVQ AX, X14
	VPBROADCASTD X14, Y14          // 0x7fff
	VPXOR Y9, Y9, Y9               // non-finite accumulator
	XORQ R8, R8

loop:
	CMPQ R8, CX
	JGE done
	VPMOVZXWD (SI)(R8*2), Y0
	VPSLLD $16, Y0, Y0
	VPMOVZXWD (DX)(R8*2), Y1
	VPSLLD $16, Y1, Y1
	VPAND Y0, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VPAND Y1, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VMULPS Y10, Y0, Y3
	VMULPS Y11, Y1, Y4
	VADDPS Y4, Y3, Y3
	VPAND Y3, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VPSRLD $16, Y3, Y4
	VPAND Y13, Y4, Y4
	VPADDD Y4, Y3, Y3
	VPADDD Y14, Y3, Y3
	VPSRLD $16, Y3, Y3
	VEXTRACTI128 $1, Y3, X5
	VPACKUSDW X5, X3, X3
	VMOVDQU X3, (DI)(R8*2)
	ADDQ $8, R8
	JMP loop

done:
	VPTEST Y9, Y9
	SETNE AL
	MOVBQZX AL, AX
	MOVQ AX, flag+40(FP)
	VZEROUPPER
	RET

// func lerp3BF16AVX2(dst, x, y, z *uint16, n int, a, b, c float32) (flag int)
// dst[i] = bf16(((0 + a*x[i]) + b*y[i]) + c*z[i]) for i < n (n a multiple
// of 8): the general affine path's float32 operations in its order, rounded
// to nearest even. flag is 1 if any input or result is not finite (the
// caller then redoes the block with the general path).
TEXT ·lerp3BF16AVX2(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DX
	MOVQ z+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSS a+40(FP), Y10
	VBROADCASTSS b+44(FP), Y11
	VBROADCASTSS c+48(FP), Y15
	MOVL $0x7f800000, AX
	MOVQ AX, X12
	VPBROADCASTD X12, Y12          // exponent mask
	MOVL $1, AX
	MOVQ AX, X13
	VPBROADCASTD X13, Y13          // 1
	MOVL $0x7fff, AX
	MOVQ AX, X14
	VPBROADCASTD X14, Y14          // 0x7fff
	VPXOR Y9, Y9, Y9               // non-finite accumulator
	VXORPS Y8, Y8, Y8              // +0
	XORQ R8, R8

loop3:
	CMPQ R8, CX
	JGE done3
	VPMOVZXWD (SI)(R8*2), Y0
	VPSLLD $16, Y0, Y0
	VPMOVZXWD (DX)(R8*2), Y1
	VPSLLD $16, Y1, Y1
	VPMOVZXWD (R9)(R8*2), Y5
	VPSLLD $16, Y5, Y5
	VPAND Y0, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VPAND Y1, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VPAND Y5, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VMULPS Y10, Y0, Y3
	VADDPS Y3, Y8, Y3              // 0 + a*x
	VMULPS Y11, Y1, Y4
	VADDPS Y4, Y3, Y3              // + b*y
	VMULPS Y15, Y5, Y4
	VADDPS Y4, Y3, Y3              // + c*z
	VPAND Y3, Y12, Y2
	VPCMPEQD Y2, Y12, Y2
	VPOR Y2, Y9, Y9
	VPSRLD $16, Y3, Y4
	VPAND Y13, Y4, Y4
	VPADDD Y4, Y3, Y3
	VPADDD Y14, Y3, Y3
	VPSRLD $16, Y3, Y3
	VEXTRACTI128 $1, Y3, X6
	VPACKUSDW X6, X3, X3
	VMOVDQU X3, (DI)(R8*2)
	ADDQ $8, R8
	JMP loop3

done3:
	VPTEST Y9, Y9
	SETNE AL
	MOVBQZX AL, AX
	MOVQ AX, flag+56(FP)
	VZEROUPPER
	RET
