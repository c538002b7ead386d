// Copyright ©2025 The wtool Authors.

//go:build amd64 && !purego && (!openblas || !cgo)

#include "textflag.h"

// func rotRowsFMA(x, y []float64, c, s float64)
//
// x, y = c·x + s·y, c·y - s·x over the first len(x) elements, with AVX2 and
// FMA. len(x) must be a multiple of 4 and len(y) >= len(x).
TEXT ·rotRowsFMA(SB), NOSPLIT, $0-64
	MOVQ         x_base+0(FP), SI
	MOVQ         x_len+8(FP), CX
	MOVQ         y_base+24(FP), DI
	VBROADCASTSD c+48(FP), Y0
	VBROADCASTSD s+56(FP), Y1
	SHRQ         $2, CX
	JZ           done
	TESTQ        $1, CX
	JZ           loop8

	// One group of 4 so that the rest is a multiple of 8.
	VMOVUPD      (SI), Y2
	VMOVUPD      (DI), Y4
	VMULPD       Y0, Y2, Y6
	VFMADD231PD  Y1, Y4, Y6
	VMULPD       Y0, Y4, Y8
	VFNMADD231PD Y1, Y2, Y8
	VMOVUPD      Y6, (SI)
	VMOVUPD      Y8, (DI)
	ADDQ         $32, SI
	ADDQ         $32, DI
	DECQ         CX
	JZ           done

loop8:
	VMOVUPD      (SI), Y2
	VMOVUPD      32(SI), Y3
	VMOVUPD      (DI), Y4
	VMOVUPD      32(DI), Y5
	VMULPD       Y0, Y2, Y6
	VMULPD       Y0, Y3, Y7
	VFMADD231PD  Y1, Y4, Y6
	VFMADD231PD  Y1, Y5, Y7
	VMULPD       Y0, Y4, Y8
	VMULPD       Y0, Y5, Y9
	VFNMADD231PD Y1, Y2, Y8
	VFNMADD231PD Y1, Y3, Y9
	VMOVUPD      Y6, (SI)
	VMOVUPD      Y7, 32(SI)
	VMOVUPD      Y8, (DI)
	VMOVUPD      Y9, 32(DI)
	ADDQ         $64, SI
	ADDQ         $64, DI
	SUBQ         $2, CX
	JNZ          loop8

done:
	VZEROUPPER
	RET
