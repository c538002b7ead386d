//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"

// AVX-512 (F, DQ, BW, VL) kernels of DELLA's keep decisions
// (della_kern.go): the same results as their Go versions, bit for bit
// (della_kern_test.go).

DATA diota<>+0(SB)/8, $0
DATA diota<>+8(SB)/8, $1
DATA diota<>+16(SB)/8, $2
DATA diota<>+24(SB)/8, $3
DATA diota<>+32(SB)/8, $4
DATA diota<>+40(SB)/8, $5
DATA diota<>+48(SB)/8, $6
DATA diota<>+56(SB)/8, $7
GLOBL diota<>(SB), RODATA|NOPTR, $64

// func keyRangex512(x, b *float64, n int) (top, lowm1 uint64)
// The largest key |x - b| (float64 bits) and the smallest key - 1
// (wrapping: a zero key gives the largest value).
TEXT ·keyRangex512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), R8
	MOVQ b+8(FP), R10
	MOVQ n+16(FP), CX
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18
	VPTERNLOGQ $0xff, Z19, Z19, Z19 // -1
	VPXORQ Z4, Z4, Z4               // top
	VMOVDQA64 Z19, Z5               // min(key - 1)

krloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VPANDQ Z18, Z1, Z1
	VPMAXUQ Z1, Z4, Z4
	VPADDQ Z19, Z1, Z1
	VPMINUQ Z1, Z5, Z5
	ADDQ $64, R8
	ADDQ $64, R10
	SUBQ $8, CX
	JNZ krloop
	VEXTRACTI64X4 $1, Z4, Y1
	VPMAXUQ Y1, Y4, Y4
	VEXTRACTI64X2 $1, Y4, X1
	VPMAXUQ X1, X4, X4
	VPSHUFD $0x4e, X4, X1
	VPMAXUQ X1, X4, X4
	VMOVQ X4, AX
	MOVQ AX, top+24(FP)
	VEXTRACTI64X4 $1, Z5, Y1
	VPMINUQ Y1, Y5, Y5
	VEXTRACTI64X2 $1, Y5, X1
	VPMINUQ X1, X5, X5
	VPSHUFD $0x4e, X5, X1
	VPMINUQ X1, X5, X5
	VMOVQ X5, AX
	MOVQ AX, lowm1+32(FP)
	VZEROUPPER
	RET

// func bucketizex512(bk *uint16, x, b *float64, n int, sh, base uint64)
// bk[j] = 0 for a zero key, else uint16((key >> sh) - base).
TEXT ·bucketizex512(SB), NOSPLIT, $0-48
	MOVQ bk+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ b+16(FP), R10
	MOVQ n+24(FP), CX
	VPBROADCASTQ sh+32(FP), Z22
	VPBROADCASTQ base+40(FP), Z23
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18

bkloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VPANDQ Z18, Z1, Z1
	VPTESTMQ Z1, Z1, K1          // non-zero keys
	VPSRLVQ Z22, Z1, Z1
	VPSUBQ Z23, Z1, Z1
	VMOVDQA64.Z Z1, K1, Z1
	VPMOVQW Z1, (DI)
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $16, DI
	SUBQ $8, CX
	JNZ bkloop
	VZEROUPPER
	RET

// decideArgs is decideParams in della_kern.go.
#define DEC_CTR 0
#define DEC_STEP 8
#define DEC_PK 16
#define DEC_A 24
#define DEC_SLOPE 32
#define DEC_ZC 40
#define DEC_KB 48
#define DEC_OPEN 56

// BOUNDS sets lo (Zlo) and hi (Zhi) of rankLine.bounds for the ranks in
// Zr (float64), with Z28 = a, Z29 = slope, Z30 = 2^32, Z31 = 1, Z25 = 2,
// Z15 = 2^32 - 1.
#define BOUNDS(Zr, Zlo, Zhi) \
	VMOVAPD Z28, Zhi \
	VFMADD231PD Z29, Zr, Zhi \
	VMULPD Z30, Zhi, Zhi \
	VCVTTPD2UQQ Zhi, Zhi \
	VPMAXUQ Z31, Zhi, Zlo \
	VPSUBQ Z31, Zlo, Zlo \
	VPADDQ Z25, Zhi, Zhi \
	VPMINUQ Z15, Zhi, Zhi

// BOUNDCONSTS loads the constants of BOUNDS from the rankLine at R11 + off.
#define BOUNDCONSTS(off) \
	VBROADCASTSD off(R11), Z28 \
	VBROADCASTSD off+8(R11), Z29 \
	MOVQ $0x41f0000000000000, AX \
	VPBROADCASTQ AX, Z30 \
	MOVQ $1, AX \
	VPBROADCASTQ AX, Z31 \
	MOVQ $2, AX \
	VPBROADCASTQ AX, Z25 \
	MOVQ $0xffffffff, AX \
	VPBROADCASTQ AX, Z15

// func decideBitsx512(bk *uint16, n int, p *decideParams) (zc int64)
// decideBitsGo on entries [0, n), a byte of kb and of open per 8 entries.
TEXT ·decideBitsx512(SB), NOSPLIT, $0-32
	MOVQ bk+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ p+16(FP), R11
	MOVQ DEC_PK(R11), R8
	MOVQ DEC_ZC(R11), R12
	MOVQ DEC_KB(R11), DI
	MOVQ DEC_OPEN(R11), R13
	BOUNDCONSTS(DEC_A)
	VMOVDQU64 diota<>(SB), Z26
	VPBROADCASTQ DEC_STEP(R11), Z16
	VPMULLQ Z26, Z16, Z24        // j step
	MOVQ DEC_CTR(R11), AX
	MOVQ $0x9E3779B97F4A7C15, BX
	ADDQ BX, AX
	VPBROADCASTQ AX, Z17
	VPADDQ Z17, Z24, Z24         // splitmix64's z: ctr + j step + golden
	VPSLLQ $3, Z16, Z19          // 8 step
	MOVQ $0xBF58476D1CE4E5B9, AX
	VPBROADCASTQ AX, Z14
	MOVQ $0x94D049BB133111EB, AX
	VPBROADCASTQ AX, Z13

decloop:
	VPSRLQ $30, Z24, Z3
	VPXORQ Z3, Z24, Z2
	VPMULLQ Z14, Z2, Z2
	VPSRLQ $27, Z2, Z3
	VPXORQ Z3, Z2, Z2
	VPMULLQ Z13, Z2, Z2
	VPSRLQ $31, Z2, Z3
	VPXORQ Z3, Z2, Z2
	VPSRLQ $32, Z2, Z2           // N: the draw's top 32 bits
	VPMOVZXWQ (SI), Z5           // buckets
	MOVWLZX 0(SI), AX            // the buckets' bounds, loaded one by one
	MOVWLZX 2(SI), BX            // (cheaper than a gather here)
	MOVWLZX 4(SI), DX
	MOVWLZX 6(SI), R9
	VMOVQ (R8)(AX*8), X7
	VPINSRQ $1, (R8)(BX*8), X7, X7
	VMOVQ (R8)(DX*8), X8
	VPINSRQ $1, (R8)(R9*8), X8, X8
	MOVWLZX 8(SI), AX
	MOVWLZX 10(SI), BX
	MOVWLZX 12(SI), DX
	MOVWLZX 14(SI), R9
	VMOVQ (R8)(AX*8), X9
	VPINSRQ $1, (R8)(BX*8), X9, X9
	VMOVQ (R8)(DX*8), X10
	VPINSRQ $1, (R8)(R9*8), X10, X10
	VINSERTI128 $1, X8, Y7, Y7
	VINSERTI128 $1, X10, Y9, Y9
	VINSERTI64X4 $1, Y9, Z7, Z7
	VPANDQ Z15, Z7, Z8           // lo
	VPSRLQ $32, Z7, Z9           // hi
	VPTESTNMQ Z5, Z5, K3         // zero entries: ranks zc, zc+1, ...
	VPEXPANDQ.Z Z26, K3, Z10
	VPBROADCASTQ R12, Z27
	VPADDQ Z27, Z10, Z10
	VCVTUQQ2PD Z10, Z10
	BOUNDS(Z10, Z11, Z12)
	VMOVDQA64 Z11, K3, Z8
	VMOVDQA64 Z12, K3, Z9
	VPCMPUQ $1, Z8, Z2, K1       // N < lo: kept
	VPCMPUQ $6, Z9, Z2, K2       // N > hi: dropped
	KORB K1, K2, K2
	KNOTB K2, K2                 // else open
	KMOVB K1, AX
	MOVB AX, (DI)
	KMOVB K2, AX
	MOVB AX, (R13)
	KMOVB K3, AX
	POPCNTL AX, AX
	ADDQ AX, R12
	VPADDQ Z19, Z24, Z24
	ADDQ $16, SI
	INCQ DI
	INCQ R13
	SUBQ $8, CX
	JNZ decloop
	MOVQ R12, zc+24(FP)
	VZEROUPPER
	RET

// func maskDeltax512(d, x, b *float64, n int, bits *byte, w, s float64)
// d[q] = ((x[q] - b[q]) * w) * s where bit q of bits is set, else +0.
TEXT ·maskDeltax512(SB), NOSPLIT, $0-56
	MOVQ d+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ b+16(FP), R10
	MOVQ n+24(FP), CX
	MOVQ bits+32(FP), SI
	VBROADCASTSD w+40(FP), Z25
	VBROADCASTSD s+48(FP), Z26

mdloop:
	KMOVB (SI), K1
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VMULPD Z25, Z1, Z1
	VMULPD Z26, Z1, Z1
	VMOVAPD.Z Z1, K1, Z1
	VMOVUPD Z1, (DI)
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $64, DI
	INCQ SI
	SUBQ $8, CX
	JNZ mdloop
	VZEROUPPER
	RET

// func absSumsMaskedx512(x, b *float64, n int, bits *byte) (before, after float64)
// absSumsx512 of x - b and of its entries whose bit is set (n > 0, a
// multiple of 8).
TEXT ·absSumsMaskedx512(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), R8
	MOVQ b+8(FP), R10
	MOVQ n+16(FP), CX
	MOVQ bits+24(FP), SI
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18
	VPXORQ Z4, Z4, Z4
	VPXORQ Z5, Z5, Z5

amloop:
	KMOVB (SI), K1
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VANDPD Z18, Z1, Z1
	VADDPD Z1, Z4, Z4
	VMOVAPD.Z Z1, K1, Z2
	VADDPD Z2, Z5, Z5
	ADDQ $64, R8
	ADDQ $64, R10
	INCQ SI
	SUBQ $8, CX
	JNZ amloop
	HSUM8(Z4, Y4, X4, before+32(FP))
	HSUM8(Z5, Y5, X5, after+40(FP))
	VZEROUPPER
	RET

// func bucketMembersx512(out *int32, bk *uint16, n int, b uint16) int
// Writes to out the j < n with bk[j] == b, in order; returns their count
// (n a multiple of 32).
TEXT ·bucketMembersx512(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ bk+8(FP), SI
	MOVQ n+16(FP), CX
	MOVWLZX b+24(FP), AX
	VPBROADCASTW AX, Z1
	XORQ R9, R9                  // count
	XORQ R10, R10                // j of this vector

bmloop:
	VPCMPEQW (SI), Z1, K1
	KMOVD K1, AX
	TESTL AX, AX
	JZ bmnext

bmbits:
	TZCNTL AX, DX
	ADDL R10, DX
	MOVL DX, (DI)(R9*4)
	INCQ R9
	LEAL -1(AX), BX
	ANDL BX, AX
	JNZ bmbits

bmnext:
	ADDQ $64, SI
	ADDQ $32, R10
	SUBQ $32, CX
	JNZ bmloop
	MOVQ R9, ret+32(FP)
	VZEROUPPER
	RET

// func bucketStartsx512(h *int32, nb, m int, line *rankLine, pk *uint64) (total int)
// bucketStartsGo for nb a multiple of 8: eight buckets at a time, their
// counts' prefix sums in a vector.
TEXT ·bucketStartsx512(SB), NOSPLIT, $0-48
	MOVQ h+0(FP), DI
	MOVQ nb+8(FP), CX
	MOVQ m+16(FP), AX
	DECQ AX
	VPBROADCASTD AX, Y20         // the last rank
	MOVQ line+24(FP), R11
	BOUNDCONSTS(0)
	MOVQ pk+32(FP), R9
	VPXORD Y0, Y0, Y0            // zero
	VPXORD Y21, Y21, Y21         // the ranks before these buckets
	MOVL $7, AX
	VPBROADCASTD AX, Y23         // lane 7
	VMULPD Z30, Z28, Z6
	VCVTTPD2UQQ Z6, Z6           // top(0): the previous end's top

bsloop:
	VMOVDQU32 (DI), Y1           // counts
	VALIGND $7, Y0, Y1, Y2       // counts shifted up a lane
	VPADDD Y2, Y1, Y2
	VALIGND $6, Y0, Y2, Y3
	VPADDD Y3, Y2, Y2
	VALIGND $4, Y0, Y2, Y3
	VPADDD Y3, Y2, Y2            // inclusive prefix sums
	VPADDD Y21, Y2, Y2           // ends
	VPSUBD Y1, Y2, Y3            // starts
	VMOVDQU32 Y3, (DI)
	VPERMD Y2, Y23, Y21          // the next buckets' first rank
	VPMINSD Y20, Y2, Y2          // at most m - 1
	VCVTDQ2PD Y2, Z4
	VMOVAPD Z28, Z5
	VFMADD231PD Z29, Z4, Z5
	VMULPD Z30, Z5, Z5
	VCVTTPD2UQQ Z5, Z5           // the ends' tops
	VALIGNQ $7, Z6, Z5, Z7       // the starts' tops: the previous ends'
	VMOVDQA64 Z5, Z6
	VPMAXUQ Z31, Z7, Z7
	VPSUBQ Z31, Z7, Z7           // lo
	VPADDQ Z25, Z5, Z5
	VPMINUQ Z15, Z5, Z5          // hi
	VPSLLQ $32, Z5, Z5
	VPORQ Z7, Z5, Z5
	VMOVDQU64 Z5, (R9)
	ADDQ $32, DI
	ADDQ $64, R9
	SUBQ $8, CX
	JNZ bsloop
	VMOVD X21, AX
	MOVQ AX, total+40(FP)
	VZEROUPPER
	RET

// func bucketCountsx(h *int32, bk *uint16, n int, mask uint64)
// h[bk[j] & mask]++ for j < n (n a multiple of 4): scalar, four entries a
// step.
TEXT ·bucketCountsx(SB), NOSPLIT, $0-32
	MOVQ h+0(FP), DI
	MOVQ bk+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ mask+24(FP), R9

bcloop:
	MOVWLZX 0(SI), AX
	MOVWLZX 2(SI), BX
	MOVWLZX 4(SI), DX
	MOVWLZX 6(SI), R8
	ANDQ R9, AX
	ANDQ R9, BX
	ANDQ R9, DX
	ANDQ R9, R8
	INCL (DI)(AX*4)
	INCL (DI)(BX*4)
	INCL (DI)(DX*4)
	INCL (DI)(R8*4)
	ADDQ $8, SI
	SUBQ $4, CX
	JNZ bcloop
	RET
