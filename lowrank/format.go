package lowrank

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// The factored format writes module M as two modules M.0 and M.1 applied in
// turn, in the module's own orientation (a Conv1D [in, out] becomes the same
// pair of nn.Linear as a Linear):
//
//	linear, conv1d: M.0.weight [r, in], M.1.weight [out, r], M.1.bias [out]
//	                nn.Sequential(nn.Linear(in, r, bias=False), nn.Linear(r, out))
//	conv:           M.0.weight [r, in, k...], M.1.weight [out, r, 1...], M.1.bias
//	                nn.Sequential(nn.ConvNd(in, r, k, stride, padding, dilation, bias=False), nn.ConvNd(r, out, 1))
//	embedding:      M.0.weight [num, r], M.1.weight [dim, r]
//	                nn.Sequential(nn.Embedding(num, r), nn.Linear(r, dim, bias=False))
//
// The names are chosen here, once, and looked up by name afterwards: a
// model's own module names ending in .0 or .1 (nn.Sequential children) are
// never parsed as factors.

// factorNames returns the factored format's tensor names for a module.
func factorNames(module string) (a, b, bias string) {
	return module + ".0.weight", module + ".1.weight", module + ".1.bias"
}

// factorShapes returns the stored shapes of the two factors of a module's
// weight at rank k.
func factorShapes(mod *arch.Module, shape []int64, k int) ([]int64, []int64) {
	out, in := mod.MatrixShape()
	switch mod.Kind {
	case arch.Embedding:
		return []int64{int64(in), int64(k)}, []int64{int64(out), int64(k)}
	case arch.Conv:
		s0 := append([]int64{int64(k)}, shape[1:]...)
		s1 := []int64{shape[0], int64(k)}
		for range len(shape) - 2 {
			s1 = append(s1, 1)
		}
		return s0, s1
	}
	return []int64{int64(k), int64(in)}, []int64{int64(out), int64(k)}
}

// factorData returns the factors of f (A: k x n, B: m x k in the module's
// orientation) in the order the factored format stores them.
func factorData(mod *arch.Module, f *Factorization) ([]float32, []float32) {
	if mod.Kind == arch.Embedding { // nn.Embedding(num, k) holds A^T
		return transpose32(f.A, f.Rank, f.N), f.B
	}
	return f.A, f.B
}

func transpose32(a []float32, r, c int) []float32 {
	out := make([]float32, len(a))
	for i := range r {
		for j := range c {
			out[j*r+i] = a[i*c+j]
		}
	}
	return out
}

// encodeProduct writes B diag(scale) A (B m x k, A k x n, the module's
// orientation; scale nil for none), or (B diag(scale) A)^T when the module
// stores its weight transposed, into dst as dtype dt, rounding once from the
// float64 product. Memory stays at one block of rows.
func encodeProduct(dst []byte, dt tensors.DType, mod *arch.Module, b, a []float32, m, k, n int, scale []float64) error {
	rows, cols := m, n
	left, right := b, a
	if mod.Transposed() {
		rows, cols = n, m
		left, right = transpose32(a, k, n), transpose32(b, m, k)
	}
	size := dt.Bits() / 8
	var err error
	lowRankRows(left, right, rows, k, cols, scale, func(i0 int, block []float64) {
		if err == nil {
			err = tensors.EncodeFloat64(dst[i0*cols*size:(i0*cols+len(block))*size], block, dt)
		}
	})
	return err
}

// residualInto writes W - B diag(scale) A into dst as dtype dt (rounded
// once), in the module's storage order; w is the weight in the module's
// orientation (m x n). It returns ||residual||^2 and the squared change
// rounding made, ||cast(residual) - residual||^2.
func residualInto(dst []byte, dt tensors.DType, mod *arch.Module, w, b, a []float32, m, k, n int, scale []float64) (norm2, cast2 float64, err error) {
	rows, cols := m, n
	left, right := b, a
	if mod.Transposed() {
		rows, cols = n, m
		left, right = transpose32(a, k, n), transpose32(b, m, k)
	}
	size := dt.Bits() / 8
	stored := w // the weight in storage order, rows x cols
	if mod.Transposed() {
		if stored, err = arch.FromMatrix(mod, w); err != nil {
			return 0, 0, err
		}
	}
	var back []float64
	lowRankRows(left, right, rows, k, cols, scale, func(i0 int, block []float64) {
		if err != nil {
			return
		}
		for ri := range len(block) / cols {
			r, row := i0+ri, block[ri*cols:(ri+1)*cols]
			wr := stored[r*cols : (r+1)*cols]
			for c := range row {
				row[c] = float64(wr[c]) - row[c]
			}
		}
		seg := dst[i0*cols*size : (i0*cols+len(block))*size]
		if err = tensors.EncodeFloat64(seg, block, dt); err != nil {
			return
		}
		if cap(back) < len(block) {
			back = make([]float64, len(block))
		}
		back = back[:len(block)]
		if err = tensors.DecodeFloat64(back, seg, dt); err != nil {
			return
		}
		for i, v := range block {
			norm2 += v * v
			d := back[i] - v
			cast2 += d * d
		}
	})
	return norm2, cast2, err
}

// rankMetadata records, in a weight file's __metadata__, the rank of every
// factored module whose factors the file holds: {"wtool_ranks": "{\"M\": r}"}.
// factorOf maps a factor's tensor name to its module.
func rankMetadata(factorOf map[string]string) func(entries []safetensors.Entry) map[string]string {
	return func(entries []safetensors.Entry) map[string]string {
		ranks := map[string]int64{}
		for _, e := range entries {
			if mod, ok := factorOf[e.Name]; ok && len(e.Shape) > 0 {
				a, _, _ := factorNames(mod)
				if e.Name == a {
					ranks[mod] = e.Shape[0]
				}
			}
		}
		if len(ranks) == 0 {
			return nil
		}
		b, _ := json.Marshal(ranks) // sorted keys
		return map[string]string{"wtool_ranks": string(b)}
	}
}

// The layouts of compression.json, per module kind.
var layouts = map[arch.Kind]string{
	arch.Linear:    "M.0.weight [rank, in], M.1.weight [out, rank], M.1.bias [out]: nn.Sequential(nn.Linear(in, rank, bias=False), nn.Linear(rank, out))",
	arch.Conv1D:    "M.0.weight [rank, in], M.1.weight [out, rank], M.1.bias [out]: the Conv1D (weight [in, out]) becomes nn.Sequential(nn.Linear(in, rank, bias=False), nn.Linear(rank, out))",
	arch.Conv:      "M.0.weight [rank, in, k...], M.1.weight [out, rank, 1...], M.1.bias [out]: nn.Sequential(nn.Conv2d(in, rank, k, stride, padding, dilation, bias=False), nn.Conv2d(rank, out, 1))",
	arch.Embedding: "M.0.weight [num, rank], M.1.weight [dim, rank]: nn.Sequential(nn.Embedding(num, rank), nn.Linear(rank, dim, bias=False))",
}

// CompressionJSON describes a factored checkpoint for the program that
// loads it: for each factored module its kind, rank, matrix sizes in the
// module's own orientation (in_features, out_features), original shape and
// whether it has a bias, the layout of each kind present, and the modules
// left dense.
func CompressionJSON(o CompressOptions, reports []TensorReport) ([]byte, error) {
	type mod struct {
		Kind        string  `json:"kind"`
		Rank        int     `json:"rank"`
		Shape       []int64 `json:"shape"`
		InFeatures  int     `json:"in_features"`
		OutFeatures int     `json:"out_features"`
		Bias        bool    `json:"bias"`
		RelError    float64 `json:"rel_error"`
		Energy      float64 `json:"energy"`
	}
	doc := struct {
		Format  string            `json:"format"`
		Method  string            `json:"method"`
		Layouts map[string]string `json:"layouts"`
		Modules map[string]mod    `json:"modules"`
		Dense   []string          `json:"left_dense"`
	}{Format: "wtool-compression", Method: o.Method, Layouts: map[string]string{}, Modules: map[string]mod{}, Dense: []string{}}
	for _, r := range reports {
		if r.LeftDense {
			doc.Dense = append(doc.Dense, r.Module)
			continue
		}
		doc.Layouts[r.Kind] = layouts[arch.Kind(r.Kind)]
		doc.Modules[r.Module] = mod{Kind: r.Kind, Rank: r.Rank, Shape: r.Shape, InFeatures: r.InFeatures, OutFeatures: r.OutFeatures,
			Bias: r.Bias, RelError: r.RelError, Energy: r.Energy}
	}
	slices.Sort(doc.Dense)
	b, err := json.MarshalIndent(doc, "", "  ")
	return append(b, '\n'), err
}

// checkCollisions refuses factored output names that are tensors of the
// model not being replaced.
func checkCollisions(names map[string]bool, factorOf map[string]string, replaced map[string]bool) error {
	for _, n := range slices.Sorted(maps.Keys(factorOf)) {
		if names[n] && !replaced[n] {
			return fmt.Errorf("the factors of module %q would be named %q, which the model already has: cannot write the factored format (use --format dense)", factorOf[n], n)
		}
	}
	return nil
}
