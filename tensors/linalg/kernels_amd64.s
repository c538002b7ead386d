// Copyright ©2025 The wtool Authors.

//go:build !purego

#include "textflag.h"

// Register-blocked GEMM micro-kernels.
//
// Every kernel computes, for one MR×NR tile of C,
//
//	acc[i][j] = Σ_p a[p*MR+i] * b[p*NR+j],   p = 0..k-1
//	C[i][j]   = acc[i][j]                      if beta == 0 (C is not read)
//	C[i][j]   = acc[i][j] + beta*C[i][j]       otherwise
//
// where a is a packed MR-row panel of A (column-major within the panel),
// b is a packed NR-column panel of B (row-major within the panel) and C is
// row-major with leading dimension ldc (in elements). k must be >= 1.
//
// Go operand order: VFMADD231PS src2, src1, dst computes dst += src1*src2.

// ---------------------------------------------------------------------------
// float32, AVX-512F, 12×32: 24 ZMM accumulators (Z8..Z31), B in Z0/Z1.

#define S512_ROW(aoff, bc, acc0, acc1) \
	VBROADCASTSS aoff(SI), bc;        \
	VFMADD231PS  Z0, bc, acc0;        \
	VFMADD231PS  Z1, bc, acc1

#define S512_STEP(aoff, boff) \
	VMOVUPS boff(DI), Z0;                    \
	VMOVUPS boff+64(DI), Z1;                 \
	S512_ROW(aoff+0, Z2, Z8, Z9);            \
	S512_ROW(aoff+4, Z3, Z10, Z11);          \
	S512_ROW(aoff+8, Z4, Z12, Z13);          \
	S512_ROW(aoff+12, Z5, Z14, Z15);         \
	S512_ROW(aoff+16, Z6, Z16, Z17);         \
	S512_ROW(aoff+20, Z7, Z18, Z19);         \
	S512_ROW(aoff+24, Z2, Z20, Z21);         \
	S512_ROW(aoff+28, Z3, Z22, Z23);         \
	S512_ROW(aoff+32, Z4, Z24, Z25);         \
	S512_ROW(aoff+36, Z5, Z26, Z27);         \
	S512_ROW(aoff+40, Z6, Z28, Z29);         \
	S512_ROW(aoff+44, Z7, Z30, Z31)

#define S512_STORE0(acc0, acc1) \
	VMOVUPS acc0, (DX);         \
	VMOVUPS acc1, 64(DX);       \
	ADDQ    R8, DX

#define S512_STOREB(acc0, acc1) \
	VFMADD231PS (DX), Z0, acc0;   \
	VFMADD231PS 64(DX), Z0, acc1; \
	VMOVUPS     acc0, (DX);       \
	VMOVUPS     acc1, 64(DX);     \
	ADDQ        R8, DX

// func sgemmKernel12x32AVX512(k int, a, b, c *float32, ldc int, beta float32)
TEXT ·sgemmKernel12x32AVX512(SB), NOSPLIT, $0-44
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8

	// Prefetch the C tile.
	MOVQ DX, R9
	MOVQ $12, R10

s512_pfc:
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	PREFETCHT0 124(R9)
	ADDQ       R8, R9
	DECQ       R10
	JNZ        s512_pfc

	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

	CMPQ CX, $4
	JLT  s512_tail

s512_loop4:
	PREFETCHT0 768(SI)
	PREFETCHT0 1024(DI)
	PREFETCHT0 1088(DI)
	S512_STEP(0, 0)
	S512_STEP(48, 128)
	PREFETCHT0 1280(DI)
	PREFETCHT0 1344(DI)
	S512_STEP(96, 256)
	S512_STEP(144, 384)
	ADDQ $192, SI
	ADDQ $512, DI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE  s512_loop4

	TESTQ CX, CX
	JZ    s512_store

s512_tail:
	S512_STEP(0, 0)
	ADDQ $48, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  s512_tail

s512_store:
	VMOVSS   beta+40(FP), X0
	VXORPS   X1, X1, X1
	VUCOMISS X1, X0
	JPS      s512_beta
	JNE      s512_beta

	S512_STORE0(Z8, Z9)
	S512_STORE0(Z10, Z11)
	S512_STORE0(Z12, Z13)
	S512_STORE0(Z14, Z15)
	S512_STORE0(Z16, Z17)
	S512_STORE0(Z18, Z19)
	S512_STORE0(Z20, Z21)
	S512_STORE0(Z22, Z23)
	S512_STORE0(Z24, Z25)
	S512_STORE0(Z26, Z27)
	S512_STORE0(Z28, Z29)
	S512_STORE0(Z30, Z31)
	VZEROUPPER
	RET

s512_beta:
	VBROADCASTSS X0, Z0
	S512_STOREB(Z8, Z9)
	S512_STOREB(Z10, Z11)
	S512_STOREB(Z12, Z13)
	S512_STOREB(Z14, Z15)
	S512_STOREB(Z16, Z17)
	S512_STOREB(Z18, Z19)
	S512_STOREB(Z20, Z21)
	S512_STOREB(Z22, Z23)
	S512_STOREB(Z24, Z25)
	S512_STOREB(Z26, Z27)
	S512_STOREB(Z28, Z29)
	S512_STOREB(Z30, Z31)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// float64, AVX-512F, 12×16: 24 ZMM accumulators (Z8..Z31), B in Z0/Z1.

#define D512_ROW(aoff, bc, acc0, acc1) \
	VBROADCASTSD aoff(SI), bc;        \
	VFMADD231PD  Z0, bc, acc0;        \
	VFMADD231PD  Z1, bc, acc1

#define D512_STEP(aoff, boff) \
	VMOVUPD boff(DI), Z0;                    \
	VMOVUPD boff+64(DI), Z1;                 \
	D512_ROW(aoff+0, Z2, Z8, Z9);            \
	D512_ROW(aoff+8, Z3, Z10, Z11);          \
	D512_ROW(aoff+16, Z4, Z12, Z13);         \
	D512_ROW(aoff+24, Z5, Z14, Z15);         \
	D512_ROW(aoff+32, Z6, Z16, Z17);         \
	D512_ROW(aoff+40, Z7, Z18, Z19);         \
	D512_ROW(aoff+48, Z2, Z20, Z21);         \
	D512_ROW(aoff+56, Z3, Z22, Z23);         \
	D512_ROW(aoff+64, Z4, Z24, Z25);         \
	D512_ROW(aoff+72, Z5, Z26, Z27);         \
	D512_ROW(aoff+80, Z6, Z28, Z29);         \
	D512_ROW(aoff+88, Z7, Z30, Z31)

#define D512_STORE0(acc0, acc1) \
	VMOVUPD acc0, (DX);         \
	VMOVUPD acc1, 64(DX);       \
	ADDQ    R8, DX

#define D512_STOREB(acc0, acc1) \
	VFMADD231PD (DX), Z0, acc0;   \
	VFMADD231PD 64(DX), Z0, acc1; \
	VMOVUPD     acc0, (DX);       \
	VMOVUPD     acc1, 64(DX);     \
	ADDQ        R8, DX

// func dgemmKernel12x16AVX512(k int, a, b, c *float64, ldc int, beta float64)
TEXT ·dgemmKernel12x16AVX512(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $3, R8

	MOVQ DX, R9
	MOVQ $12, R10

d512_pfc:
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	PREFETCHT0 127(R9)
	ADDQ       R8, R9
	DECQ       R10
	JNZ        d512_pfc

	VPXORQ Z8, Z8, Z8
	VPXORQ Z9, Z9, Z9
	VPXORQ Z10, Z10, Z10
	VPXORQ Z11, Z11, Z11
	VPXORQ Z12, Z12, Z12
	VPXORQ Z13, Z13, Z13
	VPXORQ Z14, Z14, Z14
	VPXORQ Z15, Z15, Z15
	VPXORQ Z16, Z16, Z16
	VPXORQ Z17, Z17, Z17
	VPXORQ Z18, Z18, Z18
	VPXORQ Z19, Z19, Z19
	VPXORQ Z20, Z20, Z20
	VPXORQ Z21, Z21, Z21
	VPXORQ Z22, Z22, Z22
	VPXORQ Z23, Z23, Z23
	VPXORQ Z24, Z24, Z24
	VPXORQ Z25, Z25, Z25
	VPXORQ Z26, Z26, Z26
	VPXORQ Z27, Z27, Z27
	VPXORQ Z28, Z28, Z28
	VPXORQ Z29, Z29, Z29
	VPXORQ Z30, Z30, Z30
	VPXORQ Z31, Z31, Z31

	CMPQ CX, $4
	JLT  d512_tail

d512_loop4:
	PREFETCHT0 1152(SI)
	PREFETCHT0 1216(SI)
	PREFETCHT0 1024(DI)
	PREFETCHT0 1088(DI)
	D512_STEP(0, 0)
	D512_STEP(96, 128)
	PREFETCHT0 1280(SI)
	PREFETCHT0 1280(DI)
	PREFETCHT0 1344(DI)
	D512_STEP(192, 256)
	D512_STEP(288, 384)
	ADDQ $384, SI
	ADDQ $512, DI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE  d512_loop4

	TESTQ CX, CX
	JZ    d512_store

d512_tail:
	D512_STEP(0, 0)
	ADDQ $96, SI
	ADDQ $128, DI
	DECQ CX
	JNZ  d512_tail

d512_store:
	VMOVSD   beta+40(FP), X0
	VXORPD   X1, X1, X1
	VUCOMISD X1, X0
	JPS      d512_beta
	JNE      d512_beta

	D512_STORE0(Z8, Z9)
	D512_STORE0(Z10, Z11)
	D512_STORE0(Z12, Z13)
	D512_STORE0(Z14, Z15)
	D512_STORE0(Z16, Z17)
	D512_STORE0(Z18, Z19)
	D512_STORE0(Z20, Z21)
	D512_STORE0(Z22, Z23)
	D512_STORE0(Z24, Z25)
	D512_STORE0(Z26, Z27)
	D512_STORE0(Z28, Z29)
	D512_STORE0(Z30, Z31)
	VZEROUPPER
	RET

d512_beta:
	VBROADCASTSD X0, Z0
	D512_STOREB(Z8, Z9)
	D512_STOREB(Z10, Z11)
	D512_STOREB(Z12, Z13)
	D512_STOREB(Z14, Z15)
	D512_STOREB(Z16, Z17)
	D512_STOREB(Z18, Z19)
	D512_STOREB(Z20, Z21)
	D512_STOREB(Z22, Z23)
	D512_STOREB(Z24, Z25)
	D512_STOREB(Z26, Z27)
	D512_STOREB(Z28, Z29)
	D512_STOREB(Z30, Z31)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// float32, AVX2+FMA, 6×16: 12 YMM accumulators (Y4..Y15), B in Y0/Y1.

#define S256_ROW(aoff, bc, acc0, acc1) \
	VBROADCASTSS aoff(SI), bc;        \
	VFMADD231PS  Y0, bc, acc0;        \
	VFMADD231PS  Y1, bc, acc1

#define S256_STEP(aoff, boff) \
	VMOVUPS boff(DI), Y0;            \
	VMOVUPS boff+32(DI), Y1;         \
	S256_ROW(aoff+0, Y2, Y4, Y5);    \
	S256_ROW(aoff+4, Y3, Y6, Y7);    \
	S256_ROW(aoff+8, Y2, Y8, Y9);    \
	S256_ROW(aoff+12, Y3, Y10, Y11); \
	S256_ROW(aoff+16, Y2, Y12, Y13); \
	S256_ROW(aoff+20, Y3, Y14, Y15)

#define S256_STORE0(acc0, acc1) \
	VMOVUPS acc0, (DX);         \
	VMOVUPS acc1, 32(DX);       \
	ADDQ    R8, DX

#define S256_STOREB(acc0, acc1) \
	VFMADD231PS (DX), Y0, acc0;   \
	VFMADD231PS 32(DX), Y0, acc1; \
	VMOVUPS     acc0, (DX);       \
	VMOVUPS     acc1, 32(DX);     \
	ADDQ        R8, DX

// func sgemmKernel6x16AVX2(k int, a, b, c *float32, ldc int, beta float32)
TEXT ·sgemmKernel6x16AVX2(SB), NOSPLIT, $0-44
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8

	MOVQ DX, R9
	MOVQ $6, R10

s256_pfc:
	PREFETCHT0 (R9)
	PREFETCHT0 63(R9)
	ADDQ       R8, R9
	DECQ       R10
	JNZ        s256_pfc

	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15

	CMPQ CX, $4
	JLT  s256_tail

s256_loop4:
	PREFETCHT0 384(SI)
	PREFETCHT0 512(DI)
	S256_STEP(0, 0)
	S256_STEP(24, 64)
	PREFETCHT0 576(DI)
	S256_STEP(48, 128)
	S256_STEP(72, 192)
	ADDQ $96, SI
	ADDQ $256, DI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE  s256_loop4

	TESTQ CX, CX
	JZ    s256_store

s256_tail:
	S256_STEP(0, 0)
	ADDQ $24, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  s256_tail

s256_store:
	VMOVSS   beta+40(FP), X0
	VXORPS   X1, X1, X1
	VUCOMISS X1, X0
	JPS      s256_beta
	JNE      s256_beta

	S256_STORE0(Y4, Y5)
	S256_STORE0(Y6, Y7)
	S256_STORE0(Y8, Y9)
	S256_STORE0(Y10, Y11)
	S256_STORE0(Y12, Y13)
	S256_STORE0(Y14, Y15)
	VZEROUPPER
	RET

s256_beta:
	VBROADCASTSS X0, Y0
	S256_STOREB(Y4, Y5)
	S256_STOREB(Y6, Y7)
	S256_STOREB(Y8, Y9)
	S256_STOREB(Y10, Y11)
	S256_STOREB(Y12, Y13)
	S256_STOREB(Y14, Y15)
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// float64, AVX2+FMA, 6×8: 12 YMM accumulators (Y4..Y15), B in Y0/Y1.

#define D256_ROW(aoff, bc, acc0, acc1) \
	VBROADCASTSD aoff(SI), bc;        \
	VFMADD231PD  Y0, bc, acc0;        \
	VFMADD231PD  Y1, bc, acc1

#define D256_STEP(aoff, boff) \
	VMOVUPD boff(DI), Y0;            \
	VMOVUPD boff+32(DI), Y1;         \
	D256_ROW(aoff+0, Y2, Y4, Y5);    \
	D256_ROW(aoff+8, Y3, Y6, Y7);    \
	D256_ROW(aoff+16, Y2, Y8, Y9);   \
	D256_ROW(aoff+24, Y3, Y10, Y11); \
	D256_ROW(aoff+32, Y2, Y12, Y13); \
	D256_ROW(aoff+40, Y3, Y14, Y15)

#define D256_STORE0(acc0, acc1) \
	VMOVUPD acc0, (DX);         \
	VMOVUPD acc1, 32(DX);       \
	ADDQ    R8, DX

#define D256_STOREB(acc0, acc1) \
	VFMADD231PD (DX), Y0, acc0;   \
	VFMADD231PD 32(DX), Y0, acc1; \
	VMOVUPD     acc0, (DX);       \
	VMOVUPD     acc1, 32(DX);     \
	ADDQ        R8, DX

// func dgemmKernel6x8AVX2(k int, a, b, c *float64, ldc int, beta float64)
TEXT ·dgemmKernel6x8AVX2(SB), NOSPLIT, $0-48
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $3, R8

	MOVQ DX, R9
	MOVQ $6, R10

d256_pfc:
	PREFETCHT0 (R9)
	PREFETCHT0 63(R9)
	ADDQ       R8, R9
	DECQ       R10
	JNZ        d256_pfc

	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11
	VXORPD Y12, Y12, Y12
	VXORPD Y13, Y13, Y13
	VXORPD Y14, Y14, Y14
	VXORPD Y15, Y15, Y15

	CMPQ CX, $4
	JLT  d256_tail

d256_loop4:
	PREFETCHT0 768(SI)
	PREFETCHT0 512(DI)
	D256_STEP(0, 0)
	D256_STEP(48, 64)
	PREFETCHT0 832(SI)
	PREFETCHT0 576(DI)
	D256_STEP(96, 128)
	D256_STEP(144, 192)
	ADDQ $192, SI
	ADDQ $256, DI
	SUBQ $4, CX
	CMPQ CX, $4
	JGE  d256_loop4

	TESTQ CX, CX
	JZ    d256_store

d256_tail:
	D256_STEP(0, 0)
	ADDQ $48, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  d256_tail

d256_store:
	VMOVSD   beta+40(FP), X0
	VXORPD   X1, X1, X1
	VUCOMISD X1, X0
	JPS      d256_beta
	JNE      d256_beta

	D256_STORE0(Y4, Y5)
	D256_STORE0(Y6, Y7)
	D256_STORE0(Y8, Y9)
	D256_STORE0(Y10, Y11)
	D256_STORE0(Y12, Y13)
	D256_STORE0(Y14, Y15)
	VZEROUPPER
	RET

d256_beta:
	VBROADCASTSD X0, Y0
	D256_STOREB(Y4, Y5)
	D256_STOREB(Y6, Y7)
	D256_STOREB(Y8, Y9)
	D256_STOREB(Y10, Y11)
	D256_STOREB(Y12, Y13)
	D256_STOREB(Y14, Y15)
	VZEROUPPER
	RET
