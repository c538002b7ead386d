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
// of that tensor (of a sample of them: sampledHashes). So the mask of any element is computed without the
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

// hashBlock hashes the float64 bits of one block of values: four FNV-1a
// chains over 64-bit words (element i feeds chain i mod 4, so the chains
// run in parallel), -0 counted as +0, mixed together at the end.
func hashBlock(v []float64) uint64 {
	const prime = 0x100000001b3
	h := [4]uint64{0xcbf29ce484222325, 0x84222325cbf29ce4, 0xcbf29ce484222326, 0x84222326cbf29ce4}
	bits := func(x float64) uint64 {
		u := math.Float64bits(x)
		return u & -b2u(u<<1 != 0) // -0 and +0 hash alike
	}
	i := 0
	for ; i+4 <= len(v); i += 4 {
		h[0] = (h[0] ^ bits(v[i])) * prime
		h[1] = (h[1] ^ bits(v[i+1])) * prime
		h[2] = (h[2] ^ bits(v[i+2])) * prime
		h[3] = (h[3] ^ bits(v[i+3])) * prime
	}
	for k := 0; i < len(v); i, k = i+1, k+1 {
		h[k] = (h[k] ^ bits(v[i])) * prime
	}
	return splitmix64(splitmix64(splitmix64(h[0]^uint64(len(v)))^h[1]^h[2]<<1) ^ h[3])
}

// ValuesHash is the hash of a tensor's values that DARE's and DELLA's
// keys derive from (see MaskKey): a hash of a sample of them, as
// sampledHashes computes it.
func ValuesHash(ctx context.Context, t *TensorJob, in *Input) (uint64, error) {
	hs, err := sampledHashes(ctx, t, []*Input{in})
	if err != nil {
		return 0, err
	}
	return hs[0], nil
}

// sampleBlocks is how many blocks sampledHashes reads per input, at most.
const sampleBlocks = 32

// sampledHashes hashes, for each input, a sample of its values: up to
// sampleBlocks blocks spread evenly over the tensor (every stride-th one),
// combined in block order like valuesHashes. Like a hash of every value it
// follows the values (not the input's position or path, nor the dtype they
// are stored in), at a small fixed cost; two inputs equal on the sample
// get the same hash.
func sampledHashes(ctx context.Context, t *TensorJob, ins []*Input) ([]uint64, error) {
	nb := (t.N + BlockSize - 1) / BlockSize
	stride := max(1, nb/sampleBlocks)
	ns := (nb + stride - 1) / stride
	blocks := make([]uint64, ns*len(ins))
	err := t.pass(ctx, ins, stride, func(_, lo int, in [][]float64) error {
		s := lo / BlockSize / stride
		for i := range in {
			blocks[s*len(ins)+i] = hashBlock(in[i])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]uint64, len(ins))
	for i := range out {
		h := uint64(t.N) ^ 0x5a3c // not valuesHashes' value for one block
		for b := i; b < len(blocks); b += len(ins) {
			h = splitmix64(h ^ blocks[b])
		}
		out[i] = h
	}
	return out, nil
}
