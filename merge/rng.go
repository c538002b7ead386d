package merge

import (
	"context"
	"hash/fnv"
	"math"
)

// Random masks that any chunk can compute on its own.
//
// DARE keeps each entry of a task vector with probability density. Its
// random numbers come from a counter-based generator: the number for
// element e of one model's tensor is SplitMix64 at counter e under a key
// derived from the seed, the tensor's name and a hash of the model's values
// of that tensor. So the mask of any element is computed without the
// elements before it (a chunk at any offset, in any order), it is the same
// on every run with the same seed, and it does not depend on the position
// or path of the model among the inputs (reordering or renaming models
// gives the same merge), while two different models get independent masks.

const golden = 0x9E3779B97F4A7C15

// splitmix64 is the finalizer of SplitMix64 (Steele, Lea and Flood 2014).
func splitmix64(z uint64) uint64 {
	z += golden
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// Uniform returns the random number in [0, 1) of element e under key: the
// e-th output of SplitMix64 seeded with key, as a float64 with 53 random
// bits.
func Uniform(key uint64, e int) float64 {
	return float64(splitmix64(key+uint64(e)*golden)>>11) * (1.0 / (1 << 53))
}

// MaskKey derives the random key of one model's tensor from the seed, the
// tensor name and the hash of the model's values (ValuesHash).
func MaskKey(seed uint64, tensor string, values uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(tensor))
	return splitmix64(splitmix64(seed^h.Sum64()) ^ values)
}

// hashBlock hashes the float64 bits of one block of values (FNV-1a over
// 64-bit words, then a final mix).
func hashBlock(v []float64) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, x := range v {
		if x == 0 {
			x = 0 // -0 and +0 hash alike
		}
		h = (h ^ math.Float64bits(x)) * 0x100000001b3
	}
	return splitmix64(h ^ uint64(len(v)))
}

// ValuesHash hashes the values of a tensor block by block (combined in
// block order), so it does not depend on the dtype the values are stored
// in, on chunking or on the number of goroutines.
func ValuesHash(ctx context.Context, t *TensorJob, in *Input) (uint64, error) {
	hs, err := valuesHashes(ctx, t, []*Input{in})
	if err != nil {
		return 0, err
	}
	return hs[0], nil
}

// valuesHashes hashes several inputs in one pass.
func valuesHashes(ctx context.Context, t *TensorJob, ins []*Input) ([]uint64, error) {
	blocks, err := t.Blocks(ctx, ins, len(ins), func(_ int, in [][]float64, acc []float64) error {
		for i := range in {
			acc[i] = math.Float64frombits(hashBlock(in[i]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(ins))
	for i := range out {
		h := uint64(t.N)
		for b := i; b < len(blocks); b += len(ins) {
			h = splitmix64(h ^ math.Float64bits(blocks[b]))
		}
		out[i] = h
	}
	return out, nil
}
