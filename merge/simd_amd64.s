//go:build amd64 && !purego

#include "textflag.h"
#include "hsum_amd64.h"

// AVX-512 (F, DQ, BW, VL) kernels of the merge methods. Each computes, on
// blocks of float64 values, exactly the float64 operations of its Go
// counterpart in simd.go (same operations, same order, no fused
// multiply-adds), so results are identical bit for bit; simd_test.go
// checks them against the Go code.

DATA iota64<>+0(SB)/8, $0
DATA iota64<>+8(SB)/8, $1
DATA iota64<>+16(SB)/8, $2
DATA iota64<>+24(SB)/8, $3
DATA iota64<>+32(SB)/8, $4
DATA iota64<>+40(SB)/8, $5
DATA iota64<>+48(SB)/8, $6
DATA iota64<>+56(SB)/8, $7
GLOBL iota64<>(SB), RODATA|NOPTR, $64

// func decodeBF16x512(dst *float64, src *uint16, n int) (bad int)
// dst[i] = float64(bf16 src[i]) for i < n (n > 0, a multiple of 16); bad
// is non-zero if any value is NaN or infinite.
TEXT ·decodeBF16x512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z30
	KXORW K7, K7, K7

bf16loop:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VPANDD Z30, Z0, Z1
	VPCMPEQD Z30, Z1, K1
	KORW K1, K7, K7
	VCVTPS2PD Y0, Z2
	VEXTRACTI64X4 $1, Z0, Y3
	VCVTPS2PD Y3, Z3
	VMOVUPD Z2, (DI)
	VMOVUPD Z3, 64(DI)
	ADDQ $32, SI
	ADDQ $128, DI
	SUBQ $16, CX
	JNZ bf16loop
	KMOVW K7, AX
	MOVQ AX, bad+24(FP)
	VZEROUPPER
	RET

// func decodeF32x512(dst *float64, src *uint32, n int) (bad int)
// The same for float32 values.
TEXT ·decodeF32x512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z30
	KXORW K7, K7, K7

f32loop:
	VMOVDQU32 (SI), Z0
	VPANDD Z30, Z0, Z1
	VPCMPEQD Z30, Z1, K1
	KORW K1, K7, K7
	VCVTPS2PD Y0, Z2
	VEXTRACTI64X4 $1, Z0, Y3
	VCVTPS2PD Y3, Z3
	VMOVUPD Z2, (DI)
	VMOVUPD Z3, 64(DI)
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $16, CX
	JNZ f32loop
	KMOVW K7, AX
	MOVQ AX, bad+24(FP)
	VZEROUPPER
	RET

// func encodeBF16x512(dst *uint16, src *float64, n int)
// dst[i] = the bfloat16 nearest to src[i], ties to even, rounded once (n > 0,
// a multiple of 8): rounding to float32 by rounding to odd, then to
// bfloat16 to nearest even, as tensors.BF16FromFloat64 does.
TEXT ·encodeBF16x512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z28
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Y31
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Y30
	MOVL $1, AX
	VPBROADCASTD AX, Y29
	MOVL $2, AX
	VPBROADCASTD AX, Y27
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Y26
	MOVL $0x40, AX
	VPBROADCASTD AX, Y25

encloop:
	VMOVUPD (SI), Z0             // x
	VCVTPD2PS Z0, Y1             // t = float32(x), to nearest even
	VCVTPS2PD Y1, Z2             // float64(t)
	VCMPPD $0x04, Z2, Z0, K1     // inexact: x != float64(t) (or NaN)
	VCMPPD $0x03, Z0, Z0, K2     // x is NaN
	KANDNW K1, K2, K1            // K1 = inexact and not NaN
	VPANDD Y31, Y1, Y4
	VPCMPEQD Y30, Y4, K3         // t is infinite
	KANDNW K1, K3, K1
	VPTESTNMD Y29, Y1, K4        // t's last bit is even
	KANDW K4, K1, K1             // the lanes to round to odd
	VPANDQ Z28, Z2, Z5           // |float64(t)|
	VPANDQ Z28, Z0, Z6           // |x|
	VCMPPD $0x1E, Z6, Z5, K5     // |float64(t)| > |x|
	VPADDD Y29, Y1, K1, Y1       // u + 1 ...
	KANDW K5, K1, K6
	VPSUBD Y27, Y1, K6, Y1       // ... or u - 1 towards zero
	VPANDD Y31, Y1, Y7
	VPCMPUD $6, Y30, Y7, K7      // NaN: |u| > 0x7f800000
	VPSRLD $16, Y1, Y8
	VPANDD Y29, Y8, Y9
	VPADDD Y9, Y1, Y9
	VPADDD Y26, Y9, Y9
	VPSRLD $16, Y9, Y9           // (u + 0x7fff + (u>>16)&1) >> 16
	VPORD Y25, Y8, Y8            // NaN: (u>>16) | 0x40
	VMOVDQA32 Y8, K7, Y9
	VPMOVDW Y9, X10
	VMOVDQU X10, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JNZ encloop
	VZEROUPPER
	RET

// magParams is keepMagParams in simd.go.
#define MAG_THR 0
#define MAG_CUT 8
#define MAG_LO 16
#define MAG_W 24

// func keepMagx512(d, x, b *float64, n int, p *keepMagParams)
// d[k] = (x[k] - b[k]) * w where |x[k] - b[k]| is kept (Threshold.Keep of
// its bits at element lo + k), else +0 * w (n > 0, a multiple of 8).
TEXT ·keepMagx512(SB), NOSPLIT, $0-40
	MOVQ d+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ b+16(FP), R10
	MOVQ n+24(FP), CX
	MOVQ p+32(FP), R11
	VPBROADCASTQ MAG_THR(R11), Z20
	VPBROADCASTQ MAG_CUT(R11), Z21
	VPBROADCASTQ MAG_LO(R11), Z24
	VBROADCASTSD MAG_W(R11), Z25
	VPADDQ iota64<>(SB), Z24, Z24
	MOVQ $8, AX
	VPBROADCASTQ AX, Z19
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18

magloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1         // v = x - b
	VPANDQ Z18, Z1, Z2           // key
	VPCMPUQ $6, Z20, Z2, K1      // key > thr
	VPCMPUQ $0, Z20, Z2, K2      // key == thr
	VPCMPQ $2, Z21, Z24, K3      // index <= cutoff
	KANDW K3, K2, K2
	KORW K2, K1, K1
	VMOVAPD.Z Z1, K1, Z1
	VMULPD Z25, Z1, Z1
	VMOVUPD Z1, (DI)
	VPADDQ Z19, Z24, Z24
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ magloop
	VZEROUPPER
	RET

// randParams is keepRandParams in simd.go.
#define RND_KEY 0
#define RND_LO 8
#define RND_DENS 16
#define RND_MODE 24
#define RND_SCALE 32
#define RND_W 40

// func keepRandx512(d, x, b *float64, n int, p *keepRandParams)
// DARE: d[k] = rescaled (x[k] - b[k]) * w where Uniform(key, lo+k) <
// density, else the rescaled +0 * w (n > 0, a multiple of 8).
TEXT ·keepRandx512(SB), NOSPLIT, $0-40
	MOVQ d+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ b+16(FP), R10
	MOVQ n+24(FP), CX
	MOVQ p+32(FP), R11
	MOVQ $0x9E3779B97F4A7C15, AX
	VPBROADCASTQ AX, Z16         // golden
	MOVQ RND_KEY(R11), BX
	ADDQ AX, BX
	VPBROADCASTQ BX, Z17         // key + golden
	VPBROADCASTQ RND_LO(R11), Z24
	VPADDQ iota64<>(SB), Z24, Z24
	MOVQ $8, AX
	VPBROADCASTQ AX, Z19
	MOVQ $0xBF58476D1CE4E5B9, AX
	VPBROADCASTQ AX, Z14
	MOVQ $0x94D049BB133111EB, AX
	VPBROADCASTQ AX, Z13
	MOVQ $0x3ca0000000000000, AX // 2^-53
	VPBROADCASTQ AX, Z12
	VBROADCASTSD RND_DENS(R11), Z20
	VBROADCASTSD RND_SCALE(R11), Z21
	VBROADCASTSD RND_W(R11), Z25
	MOVQ RND_MODE(R11), R12

rndloop:
	VPMULLQ Z16, Z24, Z2         // e * golden
	VPADDQ Z17, Z2, Z2           // + key + golden
	VPSRLQ $30, Z2, Z3
	VPXORQ Z3, Z2, Z2
	VPMULLQ Z14, Z2, Z2
	VPSRLQ $27, Z2, Z3
	VPXORQ Z3, Z2, Z2
	VPMULLQ Z13, Z2, Z2
	VPSRLQ $31, Z2, Z3
	VPXORQ Z3, Z2, Z2
	VPSRLQ $11, Z2, Z2
	VCVTUQQ2PD Z2, Z2
	VMULPD Z12, Z2, Z2           // Uniform(key, e)
	VCMPPD $0x11, Z20, Z2, K1    // < density: kept
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VMOVAPD.Z Z1, K1, Z1
	CMPQ R12, $0
	JNE rndl1
	VDIVPD Z20, Z1, Z1           // inverse: / density
	JMP rndw
rndl1:
	CMPQ R12, $1
	JNE rndw
	VMULPD Z21, Z1, Z1           // l1: * scale (the caller passes mode 2 for scale 0)
rndw:
	VMULPD Z25, Z1, Z1
	VMOVUPD Z1, (DI)
	VPADDQ Z19, Z24, Z24
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ rndloop
	VZEROUPPER
	RET

// combParams is combineParams in simd.go.
#define CMB_W0 0
#define CMB_W1 8
#define CMB_LAMBDA 16
#define CMB_NORM 24
#define CMB_DIV 32

// func consensus2x512(out, d0, d1, b *float64, n int, p *combineParams)
// TIES' sign election of two weighted deltas (see consensus2).
TEXT ·consensus2x512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ d0+8(FP), R8
	MOVQ d1+16(FP), R9
	MOVQ b+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), R11
	VBROADCASTSD CMB_W0(R11), Z25
	VBROADCASTSD CMB_W1(R11), Z26
	VBROADCASTSD CMB_LAMBDA(R11), Z27
	MOVQ CMB_NORM(R11), R12
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18
	MOVQ $0x8000000000000000, AX
	VPBROADCASTQ AX, Z17
	MOVQ $0x3ff0000000000000, AX
	VPBROADCASTQ AX, Z16
	VPXORQ Z15, Z15, Z15

conloop:
	VMOVUPD (R8), Z1             // d0
	VMOVUPD (R9), Z3             // d1
	VADDPD Z3, Z1, Z5            // total = d0 + d1
	VCMPPD $0x11, Z15, Z5, K4    // total < 0
	VPTESTMQ Z18, Z1, K1         // d0 != 0
	VPTESTMQ Z17, Z1, K2         // d0 < 0 (sign bit)
	KXNORW K2, K4, K2
	KANDW K2, K1, K1             // d0 agrees
	VPTESTMQ Z18, Z3, K2
	VPTESTMQ Z17, Z3, K3
	KXNORW K3, K4, K3
	KANDW K3, K2, K2             // d1 agrees
	VMOVAPD.Z Z1, K1, Z6
	VADDPD Z6, Z15, Z6           // 0 + d0
	VMOVAPD.Z Z3, K2, Z7
	VADDPD Z7, Z6, Z6            // + d1: mixed
	VMOVAPD.Z Z25, K1, Z8
	VADDPD Z8, Z15, Z8
	VMOVAPD.Z Z26, K2, Z9
	VADDPD Z9, Z8, Z8            // divisor
	VCMPPD $0x00, Z15, Z8, K5
	VMOVAPD Z16, K5, Z8          // a zero divisor counts as 1
	CMPQ R12, $0
	JE connonorm
	VDIVPD Z8, Z6, Z6
connonorm:
	VMULPD Z27, Z6, Z6           // lambda * mixed
	VADDPD (R10), Z6, Z6         // + b
	VMOVUPD Z6, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ conloop
	VZEROUPPER
	RET

// func linear2x512(out, d0, d1, b *float64, n int, p *combineParams)
// b + lambda * (0 + d0 + d1) [/ divisor].
TEXT ·linear2x512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ d0+8(FP), R8
	MOVQ d1+16(FP), R9
	MOVQ b+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), R11
	VBROADCASTSD CMB_LAMBDA(R11), Z27
	VBROADCASTSD CMB_DIV(R11), Z28
	MOVQ CMB_NORM(R11), R12
	VPXORQ Z15, Z15, Z15

linloop:
	VADDPD (R8), Z15, Z6
	VADDPD (R9), Z6, Z6
	CMPQ R12, $0
	JE linnonorm
	VDIVPD Z28, Z6, Z6
linnonorm:
	VMULPD Z27, Z6, Z6
	VADDPD (R10), Z6, Z6
	VMOVUPD Z6, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ linloop
	VZEROUPPER
	RET

// func lerpx512(out, x, y *float64, n int, s0, s1 float64)
// out = s0 x + s1 y (two products, one sum).
TEXT ·lerpx512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ y+16(FP), R9
	MOVQ n+24(FP), CX
	VBROADCASTSD s0+32(FP), Z20
	VBROADCASTSD s1+40(FP), Z21

lerploop:
	VMULPD (R8), Z20, Z1
	VMULPD (R9), Z21, Z2
	VADDPD Z2, Z1, Z1
	VMOVUPD Z1, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ lerploop
	VZEROUPPER
	RET

// func consensusNx512(out *float64, ds **float64, ws *float64, m int, b *float64, n int, p *combineParams)
// consensus of m >= 1 weighted deltas ds[0..m-1] (n > 0, a multiple of 8).
TEXT ·consensusNx512(SB), NOSPLIT, $0-56
	MOVQ out+0(FP), DI
	MOVQ ds+8(FP), R8
	MOVQ ws+16(FP), R9
	MOVQ m+24(FP), R13
	MOVQ b+32(FP), R10
	MOVQ n+40(FP), CX
	MOVQ p+48(FP), R11
	VBROADCASTSD CMB_LAMBDA(R11), Z27
	MOVQ CMB_NORM(R11), R12
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18
	MOVQ $0x8000000000000000, AX
	VPBROADCASTQ AX, Z17
	MOVQ $0x3ff0000000000000, AX
	VPBROADCASTQ AX, Z16
	VPXORQ Z15, Z15, Z15
	XORQ BX, BX                  // byte offset into the blocks

cnloop:
	VMOVAPD Z15, Z5              // total = 0
	XORQ SI, SI
cnsum:
	MOVQ (R8)(SI*8), DX
	VADDPD (DX)(BX*1), Z5, Z5
	INCQ SI
	CMPQ SI, R13
	JL cnsum
	VCMPPD $0x11, Z15, Z5, K4    // total < 0
	VMOVAPD Z15, Z6              // mixed = 0
	VMOVAPD Z15, Z8              // divisor = 0
	XORQ SI, SI
cnmix:
	MOVQ (R8)(SI*8), DX
	VMOVUPD (DX)(BX*1), Z1
	VPTESTMQ Z18, Z1, K1
	VPTESTMQ Z17, Z1, K2
	KXNORW K2, K4, K2
	KANDW K2, K1, K1             // agrees
	VMOVAPD.Z Z1, K1, Z1
	VADDPD Z1, Z6, Z6
	VBROADCASTSD (R9)(SI*8), Z2
	VMOVAPD.Z Z2, K1, Z2
	VADDPD Z2, Z8, Z8
	INCQ SI
	CMPQ SI, R13
	JL cnmix
	VCMPPD $0x00, Z15, Z8, K5
	VMOVAPD Z16, K5, Z8
	CMPQ R12, $0
	JE cnnonorm
	VDIVPD Z8, Z6, Z6
cnnonorm:
	VMULPD Z27, Z6, Z6
	VADDPD (R10)(BX*1), Z6, Z6
	VMOVUPD Z6, (DI)(BX*1)
	ADDQ $64, BX
	SUBQ $8, CX
	JNZ cnloop
	VZEROUPPER
	RET

// func linearNx512(out *float64, ds **float64, m int, b *float64, n int, p *combineParams)
// b + lambda * (0 + d_0 + ... + d_m-1) [/ divisor].
TEXT ·linearNx512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ ds+8(FP), R8
	MOVQ m+16(FP), R13
	MOVQ b+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), R11
	VBROADCASTSD CMB_LAMBDA(R11), Z27
	VBROADCASTSD CMB_DIV(R11), Z28
	MOVQ CMB_NORM(R11), R12
	VPXORQ Z15, Z15, Z15
	XORQ BX, BX

lnloop:
	VMOVAPD Z15, Z6
	XORQ SI, SI
lnsum:
	MOVQ (R8)(SI*8), DX
	VADDPD (DX)(BX*1), Z6, Z6
	INCQ SI
	CMPQ SI, R13
	JL lnsum
	CMPQ R12, $0
	JE lnnonorm
	VDIVPD Z28, Z6, Z6
lnnonorm:
	VMULPD Z27, Z6, Z6
	VADDPD (R10)(BX*1), Z6, Z6
	VMOVUPD Z6, (DI)(BX*1)
	ADDQ $64, BX
	SUBQ $8, CX
	JNZ lnloop
	VZEROUPPER
	RET

// crumbParams is keepCrumbsParams in simd.go.
#define CRB_HK 0
#define CRB_HC 8
#define CRB_TK 16
#define CRB_TC 24
#define CRB_LO 32
#define CRB_W 40

// func keepCrumbsx512(d, x, b *float64, n int, p *keepCrumbsParams)
// d[k] = (x[k] - b[k]) * w where |x[k] - b[k]| is among the hi threshold's
// and not among the top threshold's (Threshold.Keep of its bits at element
// lo + k), else +0 (n > 0, a multiple of 8).
TEXT ·keepCrumbsx512(SB), NOSPLIT, $0-40
	MOVQ d+0(FP), DI
	MOVQ x+8(FP), R8
	MOVQ b+16(FP), R10
	MOVQ n+24(FP), CX
	MOVQ p+32(FP), R11
	VPBROADCASTQ CRB_HK(R11), Z20
	VPBROADCASTQ CRB_HC(R11), Z21
	VPBROADCASTQ CRB_TK(R11), Z22
	VPBROADCASTQ CRB_TC(R11), Z23
	VPBROADCASTQ CRB_LO(R11), Z24
	VBROADCASTSD CRB_W(R11), Z25
	VPADDQ iota64<>(SB), Z24, Z24
	MOVQ $8, AX
	VPBROADCASTQ AX, Z19
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18

crbloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1         // v = x - b
	VPANDQ Z18, Z1, Z2           // key
	VPCMPUQ $6, Z20, Z2, K1      // key > hk
	VPCMPUQ $0, Z20, Z2, K2      // key == hk
	VPCMPQ $2, Z21, Z24, K3      // index <= hc
	KANDW K3, K2, K2
	KORW K2, K1, K1              // in hi
	VPCMPUQ $6, Z22, Z2, K4      // key > tk
	VPCMPUQ $0, Z22, Z2, K5      // key == tk
	VPCMPQ $2, Z23, Z24, K6      // index <= tc
	KANDW K6, K5, K5
	KORW K5, K4, K4              // in top
	KANDNW K1, K4, K1            // in hi and not in top
	VMULPD Z25, Z1, Z1           // v * w
	VMOVAPD.Z Z1, K1, Z1         // or +0
	VMOVUPD Z1, (DI)
	VPADDQ Z19, Z24, Z24
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ crbloop
	VZEROUPPER
	RET

// func rangeCountx512(keys *uint64, n int, p *rangeParams, hits *uint8) (above int)
// Counts the keys above p.hi and sets, in hits (one byte per 8 keys, bit j
// for key j), the keys in [p.lo, p.lo + p.width] (n > 0, a multiple of 8).
TEXT ·rangeCountx512(SB), NOSPLIT, $0-40
	MOVQ keys+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ p+16(FP), R11
	MOVQ hits+24(FP), DI
	VPBROADCASTQ 0(R11), Z20     // lo
	VPBROADCASTQ 8(R11), Z21     // width
	VPBROADCASTQ 16(R11), Z22    // hi
	XORQ AX, AX

rngloop:
	VMOVDQU64 (SI), Z1
	VPCMPUQ $6, Z22, Z1, K1      // key > hi
	KMOVB K1, DX
	POPCNTL DX, DX
	ADDQ DX, AX
	VPSUBQ Z20, Z1, Z2           // key - lo
	VPCMPUQ $2, Z21, Z2, K2      // <= width: lo <= key <= lo + width
	KMOVB K2, DX
	MOVB DX, (DI)
	ADDQ $64, SI
	INCQ DI
	SUBQ $8, CX
	JNZ rngloop
	MOVQ AX, above+32(FP)
	VZEROUPPER
	RET

// func sceCombine2x512(out, x0, x1, b *float64, n int, p *combineParams)
// SCE's combination of two models (sceCombineGo): with d_i = x_i - b and
// sum = (0 + d0) + d1, the entries agreeing with sum's sign (d > 0 and sum
// >= 0, or d < 0 and sum < 0) give b + (0 + d0 w0 + d1 w1) / max(0 + w0 +
// w1, 1e-6) over them (n > 0, a multiple of 8).
TEXT ·sceCombine2x512(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ b+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ p+40(FP), R11
	VBROADCASTSD CMB_W0(R11), Z25
	VBROADCASTSD CMB_W1(R11), Z26
	MOVQ $0x3eb0c6f7a0b5ed8d, AX // 1e-6
	VPBROADCASTQ AX, Z24
	VPXORQ Z15, Z15, Z15

sceloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1         // d0
	VMOVUPD (R9), Z3
	VSUBPD (R10), Z3, Z3         // d1
	VADDPD Z1, Z15, Z5
	VADDPD Z3, Z5, Z5            // sum = (0 + d0) + d1
	VCMPPD $0x1d, Z15, Z5, K1    // sum >= 0
	VCMPPD $0x11, Z15, Z5, K2    // sum < 0
	VCMPPD $0x1e, Z15, Z1, K3    // d0 > 0
	VCMPPD $0x11, Z15, Z1, K4    // d0 < 0
	KANDW K1, K3, K3
	KANDW K2, K4, K4
	KORW K4, K3, K3              // d0 agrees
	VCMPPD $0x1e, Z15, Z3, K5    // d1 > 0
	VCMPPD $0x11, Z15, Z3, K6    // d1 < 0
	KANDW K1, K5, K5
	KANDW K2, K6, K6
	KORW K6, K5, K5              // d1 agrees
	VMULPD Z25, Z1, Z6
	VMOVAPD.Z Z6, K3, Z6
	VADDPD Z6, Z15, Z6           // 0 + d0 w0
	VMULPD Z26, Z3, Z7
	VMOVAPD.Z Z7, K5, Z7
	VADDPD Z7, Z6, Z6            // + d1 w1: num
	VMOVAPD.Z Z25, K3, Z8
	VADDPD Z8, Z15, Z8
	VMOVAPD.Z Z26, K5, Z9
	VADDPD Z9, Z8, Z8            // den
	VMAXPD Z8, Z24, Z8           // max(den, 1e-6), NaN if den is
	VDIVPD Z8, Z6, Z6
	VADDPD (R10), Z6, Z6         // b + num / den
	VMOVUPD Z6, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ sceloop
	VZEROUPPER
	RET

// func sceKeys2x512(keys *uint64, x0, x1, b *float64, n int)
// The bits of SCE's variance of two task vectors (sceKeys): d_i = x_i - b,
// m = ((0 + d0) + d1) / 2, keys = ((0 + (d0-m)^2) + (d1-m)^2) / 2 (n > 0,
// a multiple of 8; dividing by 2 is multiplying by 0.5, exactly).
TEXT ·sceKeys2x512(SB), NOSPLIT, $0-40
	MOVQ keys+0(FP), DI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ b+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ $0x3fe0000000000000, AX // 0.5
	VPBROADCASTQ AX, Z24
	VPXORQ Z15, Z15, Z15

skloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1         // d0
	VMOVUPD (R9), Z3
	VSUBPD (R10), Z3, Z3         // d1
	VADDPD Z1, Z15, Z5
	VADDPD Z3, Z5, Z5
	VMULPD Z24, Z5, Z5           // m
	VSUBPD Z5, Z1, Z1            // d0 - m
	VSUBPD Z5, Z3, Z3            // d1 - m
	VMULPD Z1, Z1, Z1
	VMULPD Z3, Z3, Z3
	VADDPD Z1, Z15, Z6
	VADDPD Z3, Z6, Z6
	VMULPD Z24, Z6, Z6           // v
	VMOVUPD Z6, (DI)
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ skloop
	VZEROUPPER
	RET

// func absSumsx512(x, b, d *float64, n int) (before, after float64)
// The sums of |x - b| and |d| in eight lanes (element j to lane j mod 8),
// added as sum8 does (n > 0, a multiple of 8).
TEXT ·absSumsx512(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), R8
	MOVQ b+8(FP), R10
	MOVQ d+16(FP), DI
	MOVQ n+24(FP), CX
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z18
	VPXORQ Z4, Z4, Z4
	VPXORQ Z5, Z5, Z5

absloop:
	VMOVUPD (R8), Z1
	VSUBPD (R10), Z1, Z1
	VANDPD Z18, Z1, Z1
	VADDPD Z1, Z4, Z4
	VANDPD (DI), Z18, Z2
	VADDPD Z2, Z5, Z5
	ADDQ $64, R8
	ADDQ $64, R10
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ absloop
	HSUM8(Z4, Y4, X4, before+32(FP))
	HSUM8(Z5, Y5, X5, after+40(FP))
	VZEROUPPER
	RET

// func scaleByx512(d *float64, n int, s float64)
// d[k] *= s (n > 0, a multiple of 8).
TEXT ·scaleByx512(SB), NOSPLIT, $0-24
	MOVQ d+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSD s+16(FP), Z25

scaleloop:
	VMULPD (DI), Z25, Z1
	VMOVUPD Z1, (DI)
	ADDQ $64, DI
	SUBQ $8, CX
	JNZ scaleloop
	VZEROUPPER
	RET
