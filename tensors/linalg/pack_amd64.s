// Copyright ©2025 The wtool Authors.

//go:build !purego

#include "textflag.h"

// Transposing pack kernels (AVX, no FMA needed). With w the stride of the
// destination (the micro-panel width mr or nr) they compute
//
//	dst[p*w + i] = alpha * src[i*ld + p]
//
// for i < R rows and p < C*kb columns, where R×C is the block size of the
// kernel. ld and w are in elements. Source rows are prefetched ahead.

// func transpose8x8F32(dst *float32, w int, src *float32, ld int, kb int, alpha float32)
TEXT ·transpose8x8F32(SB), NOSPLIT, $0-44
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), DX
	SHLQ         $2, DX
	MOVQ         src+16(FP), SI
	MOVQ         ld+24(FP), BX
	SHLQ         $2, BX
	MOVQ         kb+32(FP), CX
	VBROADCASTSS alpha+40(FP), Y15
	LEAQ         (BX)(BX*2), R12
	LEAQ         (SI)(BX*4), R13
	LEAQ         (DX)(DX*2), R10
	TESTQ        CX, CX
	JZ           t8f32_done

t8f32_loop:
	PREFETCHT0 512(SI)
	PREFETCHT0 512(SI)(BX*1)
	PREFETCHT0 512(SI)(BX*2)
	PREFETCHT0 512(SI)(R12*1)
	PREFETCHT0 512(R13)
	PREFETCHT0 512(R13)(BX*1)
	PREFETCHT0 512(R13)(BX*2)
	PREFETCHT0 512(R13)(R12*1)
	VMULPS     (SI), Y15, Y0
	VMULPS     (SI)(BX*1), Y15, Y1
	VMULPS     (SI)(BX*2), Y15, Y2
	VMULPS     (SI)(R12*1), Y15, Y3
	VMULPS     (R13), Y15, Y4
	VMULPS     (R13)(BX*1), Y15, Y5
	VMULPS     (R13)(BX*2), Y15, Y6
	VMULPS     (R13)(R12*1), Y15, Y7
	VUNPCKLPS  Y1, Y0, Y8
	VUNPCKHPS  Y1, Y0, Y9
	VUNPCKLPS  Y3, Y2, Y10
	VUNPCKHPS  Y3, Y2, Y11
	VUNPCKLPS  Y5, Y4, Y12
	VUNPCKHPS  Y5, Y4, Y13
	VUNPCKLPS  Y7, Y6, Y0
	VUNPCKHPS  Y7, Y6, Y1
	VSHUFPS    $0x44, Y10, Y8, Y2
	VSHUFPS    $0xEE, Y10, Y8, Y3
	VSHUFPS    $0x44, Y11, Y9, Y4
	VSHUFPS    $0xEE, Y11, Y9, Y5
	VSHUFPS    $0x44, Y0, Y12, Y6
	VSHUFPS    $0xEE, Y0, Y12, Y7
	VSHUFPS    $0x44, Y1, Y13, Y8
	VSHUFPS    $0xEE, Y1, Y13, Y9
	LEAQ       (DI)(DX*4), R11
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x31, Y6, Y2, Y11
	VMOVUPS    Y10, (DI)
	VMOVUPS    Y11, (R11)
	VPERM2F128 $0x20, Y7, Y3, Y10
	VPERM2F128 $0x31, Y7, Y3, Y11
	VMOVUPS    Y10, (DI)(DX*1)
	VMOVUPS    Y11, (R11)(DX*1)
	VPERM2F128 $0x20, Y8, Y4, Y10
	VPERM2F128 $0x31, Y8, Y4, Y11
	VMOVUPS    Y10, (DI)(DX*2)
	VMOVUPS    Y11, (R11)(DX*2)
	VPERM2F128 $0x20, Y9, Y5, Y10
	VPERM2F128 $0x31, Y9, Y5, Y11
	VMOVUPS    Y10, (DI)(R10*1)
	VMOVUPS    Y11, (R11)(R10*1)
	ADDQ       $32, SI
	ADDQ       $32, R13
	LEAQ       (DI)(DX*8), DI
	DECQ       CX
	JNZ        t8f32_loop

t8f32_done:
	VZEROUPPER
	RET

// func transpose4x8F32(dst *float32, w int, src *float32, ld int, kb int, alpha float32)
TEXT ·transpose4x8F32(SB), NOSPLIT, $0-44
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), DX
	SHLQ         $2, DX
	MOVQ         src+16(FP), SI
	MOVQ         ld+24(FP), BX
	SHLQ         $2, BX
	MOVQ         kb+32(FP), CX
	VBROADCASTSS alpha+40(FP), Y15
	LEAQ         (BX)(BX*2), R12
	LEAQ         (DX)(DX*2), R10
	TESTQ        CX, CX
	JZ           t4f32_done

t4f32_loop:
	PREFETCHT0   512(SI)
	PREFETCHT0   512(SI)(BX*1)
	PREFETCHT0   512(SI)(BX*2)
	PREFETCHT0   512(SI)(R12*1)
	VMULPS       (SI), Y15, Y0
	VMULPS       (SI)(BX*1), Y15, Y1
	VMULPS       (SI)(BX*2), Y15, Y2
	VMULPS       (SI)(R12*1), Y15, Y3
	VUNPCKLPS    Y1, Y0, Y4
	VUNPCKHPS    Y1, Y0, Y5
	VUNPCKLPS    Y3, Y2, Y6
	VUNPCKHPS    Y3, Y2, Y7
	VSHUFPS      $0x44, Y6, Y4, Y0
	VSHUFPS      $0xEE, Y6, Y4, Y1
	VSHUFPS      $0x44, Y7, Y5, Y2
	VSHUFPS      $0xEE, Y7, Y5, Y3
	LEAQ         (DI)(DX*4), R11
	VMOVUPS      X0, (DI)
	VEXTRACTF128 $1, Y0, (R11)
	VMOVUPS      X1, (DI)(DX*1)
	VEXTRACTF128 $1, Y1, (R11)(DX*1)
	VMOVUPS      X2, (DI)(DX*2)
	VEXTRACTF128 $1, Y2, (R11)(DX*2)
	VMOVUPS      X3, (DI)(R10*1)
	VEXTRACTF128 $1, Y3, (R11)(R10*1)
	ADDQ         $32, SI
	LEAQ         (DI)(DX*8), DI
	DECQ         CX
	JNZ          t4f32_loop

t4f32_done:
	VZEROUPPER
	RET

// func transpose4x4F64(dst *float64, w int, src *float64, ld int, kb int, alpha float64)
TEXT ·transpose4x4F64(SB), NOSPLIT, $0-48
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), DX
	SHLQ         $3, DX
	MOVQ         src+16(FP), SI
	MOVQ         ld+24(FP), BX
	SHLQ         $3, BX
	MOVQ         kb+32(FP), CX
	VBROADCASTSD alpha+40(FP), Y15
	LEAQ         (BX)(BX*2), R12
	LEAQ         (DX)(DX*2), R10
	TESTQ        CX, CX
	JZ           t4f64_done

t4f64_loop:
	PREFETCHT0 512(SI)
	PREFETCHT0 512(SI)(BX*1)
	PREFETCHT0 512(SI)(BX*2)
	PREFETCHT0 512(SI)(R12*1)
	VMULPD     (SI), Y15, Y0
	VMULPD     (SI)(BX*1), Y15, Y1
	VMULPD     (SI)(BX*2), Y15, Y2
	VMULPD     (SI)(R12*1), Y15, Y3
	VUNPCKLPD  Y1, Y0, Y4
	VUNPCKHPD  Y1, Y0, Y5
	VUNPCKLPD  Y3, Y2, Y6
	VUNPCKHPD  Y3, Y2, Y7
	VPERM2F128 $0x20, Y6, Y4, Y0
	VPERM2F128 $0x20, Y7, Y5, Y1
	VPERM2F128 $0x31, Y6, Y4, Y2
	VPERM2F128 $0x31, Y7, Y5, Y3
	VMOVUPD    Y0, (DI)
	VMOVUPD    Y1, (DI)(DX*1)
	VMOVUPD    Y2, (DI)(DX*2)
	VMOVUPD    Y3, (DI)(R10*1)
	ADDQ       $32, SI
	LEAQ       (DI)(DX*4), DI
	DECQ       CX
	JNZ        t4f64_loop

t4f64_done:
	VZEROUPPER
	RET

// Splitting pack kernels. They scatter one row of a stored matrix into the
// rows of consecutive micro-panels:
//
//	dst[q*pstride + j] = alpha * src[q*w + j]   for q < npieces, j < w
//
// w, pstride and npieces are in elements. The row ld elements after the
// next one is prefetched.

// func splitRowF32(dst *float32, w, pstride int, src *float32, npieces, ld int, alpha float32)
TEXT ·splitRowF32(SB), NOSPLIT, $0-52
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), DX
	MOVQ         pstride+16(FP), R8
	SHLQ         $2, R8
	MOVQ         src+24(FP), SI
	MOVQ         npieces+32(FP), CX
	MOVQ         ld+40(FP), R12
	SHLQ         $3, R12            // prefetch distance: two rows
	VBROADCASTSS alpha+48(FP), Y15
	MOVQ         DX, R9
	SHRQ         $3, R9            // YMM chunks per piece
	TESTQ        CX, CX
	JZ           srf32_done

srf32_piece:
	MOVQ       DI, R10
	MOVQ       R9, R11
	PREFETCHT0 (SI)(R12*1)
	TESTQ      R11, R11
	JZ         srf32_x

srf32_y:
	PREFETCHT0 (SI)(R12*1)
	VMULPS  (SI), Y15, Y0
	VMOVUPS Y0, (R10)
	ADDQ    $32, SI
	ADDQ    $32, R10
	DECQ    R11
	JNZ     srf32_y

srf32_x:
	TESTQ   $4, DX
	JZ      srf32_q
	VMULPS  (SI), X15, X0
	VMOVUPS X0, (R10)
	ADDQ    $16, SI
	ADDQ    $16, R10

srf32_q:
	TESTQ  $2, DX
	JZ     srf32_s
	VMOVSD (SI), X0
	VMULPS X0, X15, X0
	VMOVSD X0, (R10)
	ADDQ   $8, SI
	ADDQ   $8, R10

srf32_s:
	TESTQ  $1, DX
	JZ     srf32_next
	VMOVSS (SI), X0
	VMULSS X0, X15, X0
	VMOVSS X0, (R10)
	ADDQ   $4, SI

srf32_next:
	ADDQ R8, DI
	DECQ CX
	JNZ  srf32_piece

srf32_done:
	VZEROUPPER
	RET

// func splitRowF64(dst *float64, w, pstride int, src *float64, npieces, ld int, alpha float64)
TEXT ·splitRowF64(SB), NOSPLIT, $0-56
	MOVQ         dst+0(FP), DI
	MOVQ         w+8(FP), DX
	MOVQ         pstride+16(FP), R8
	SHLQ         $3, R8
	MOVQ         src+24(FP), SI
	MOVQ         npieces+32(FP), CX
	MOVQ         ld+40(FP), R12
	SHLQ         $4, R12            // prefetch distance: two rows
	VBROADCASTSD alpha+48(FP), Y15
	MOVQ         DX, R9
	SHRQ         $2, R9            // YMM chunks per piece
	TESTQ        CX, CX
	JZ           srf64_done

srf64_piece:
	MOVQ       DI, R10
	MOVQ       R9, R11
	PREFETCHT0 (SI)(R12*1)
	TESTQ      R11, R11
	JZ         srf64_x

srf64_y:
	PREFETCHT0 (SI)(R12*1)
	VMULPD  (SI), Y15, Y0
	VMOVUPD Y0, (R10)
	ADDQ    $32, SI
	ADDQ    $32, R10
	DECQ    R11
	JNZ     srf64_y

srf64_x:
	TESTQ   $2, DX
	JZ      srf64_s
	VMULPD  (SI), X15, X0
	VMOVUPD X0, (R10)
	ADDQ    $16, SI
	ADDQ    $16, R10

srf64_s:
	TESTQ  $1, DX
	JZ     srf64_next
	VMOVSD (SI), X0
	VMULSD X0, X15, X0
	VMOVSD X0, (R10)
	ADDQ   $8, SI

srf64_next:
	ADDQ R8, DI
	DECQ CX
	JNZ  srf64_piece

srf64_done:
	VZEROUPPER
	RET
