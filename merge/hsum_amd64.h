// HSUM8 adds the eight float64 lanes of Z (Y and X are its lower halves)
// as sum8 in simd.go does: lanes l and l+4, then l and l+2, then the pair;
// the sum is stored at dst. It clobbers Y1 and X1.
#define HSUM8(Z, Y, X, dst) \
	VEXTRACTF64X4 $1, Z, Y1 \
	VADDPD Y1, Y, Y \
	VEXTRACTF128 $1, Y, X1 \
	VADDPD X1, X, X \
	VPERMILPD $1, X, X1 \
	VADDSD X1, X, X \
	VMOVSD X, dst
