package merge

import (
	"context"
	"fmt"
	"math"
	"sync"
)

// sce: SCE (Wan et al., 2024) as mergekit computes it. Task vectors
// T_i = x_i - base; with select_topk < 1 only the entries whose variance
// across the task vectors is among the int(select_topk * nonzero) largest
// are kept (nonzero: entries of non-zero variance; an exact streaming
// selection); each model's weight is its kept task vector's mean square,
// normalized to sum 1 (1/N each when they sum to less than 1e-6); signs
// are elected by the sum of the kept task vectors and the agreeing entries
// averaged by weight: base + sum_agree w_i T_i / max(sum_agree w_i, 1e-6).
type sceMethod struct{ about }

func init() {
	Register(sceMethod{about{name: "sce", doc: "SCE: select entries by variance across task vectors, weight models by energy, elect signs"}})
}

func (sceMethod) Params() []Param {
	return []Param{
		{Name: "select_topk", Kind: Number, Default: Num(1), Check: InRange(0, 1, false, false),
			Doc: "sce: fraction of the entries (by variance across the task vectors) kept (default 1)"},
		{Name: "int8_mask", Kind: Bool, Hidden: true, Doc: "mergekit's memory option; no effect on the result"},
	}
}

func (sceMethod) Check(p *Plan) error {
	if p.Base == "" {
		return fmt.Errorf("sce merges task vectors: give the base model (--base, or base_model in the config)")
	}
	return nil
}

func (sceMethod) Start(context.Context, *Job) (Merger, error) { return sceMerger{}, nil }

type sceMerger struct{}

// sceVariance is the population variance of the task vectors' entry k.
func sceVariance(in [][]float64, b []float64, k int) float64 {
	n := len(in)
	var m float64
	for i := range n {
		m += in[i][k] - b[k]
	}
	m /= float64(n)
	var v float64
	for i := range n {
		d := in[i][k] - b[k] - m
		v += d * d
	}
	return v / float64(n)
}

// sceKeys writes the bits of sceVariance of every entry of a block into
// keys (the same float64 operations, in the same order, as sceVariance).
func sceKeys(keys []uint64, x [][]float64, b []float64) {
	m := 0
	if haveAVX512 && len(x) == 2 {
		if m = len(keys) &^ 7; m > 0 {
			sceKeys2x512(&keys[0], &x[0][0], &x[1][0], &b[0], m)
		}
	}
	tail := make([][]float64, 0, 8)
	for _, xi := range x {
		tail = append(tail, xi[m:])
	}
	sceKeysGo(keys[m:], tail, b[m:])
}

// sceKeysGo is sceKeys in Go.
func sceKeysGo(keys []uint64, x [][]float64, b []float64) {
	n := len(x)
	b = b[:len(keys)]
	if n == 2 {
		x0, x1 := x[0][:len(keys)], x[1][:len(keys)]
		for k := range keys {
			d0, d1 := x0[k]-b[k], x1[k]-b[k]
			var m float64
			m += d0
			m += d1
			m /= 2
			e0, e1 := d0-m, d1-m
			var v float64
			v += e0 * e0
			v += e1 * e1
			keys[k] = math.Float64bits(v / 2)
		}
		return
	}
	for k := range keys {
		keys[k] = math.Float64bits(sceVariance(x, b, k))
	}
}

// sceKept writes, for every entry of a block starting at element lo, all
// ones when it is kept (its key against thr), else zero.
func sceKept(mask, keys []uint64, thr Threshold, lo int) {
	keys = keys[:len(mask)]
	for k, key := range keys {
		mask[k] = -(b2u(key > thr.Key) | b2u(key == thr.Key)&b2u(lo+k <= thr.Cutoff))
	}
}

// sceSquares adds, for each model i, the squares of its task vector's kept
// entries (mask all ones; nil: every entry) into acc[i], in element order
// (the order of the per-block sums is the reference formula's).
func sceSquares(acc []float64, x [][]float64, b []float64, mask []uint64) {
	n := len(x)
	m := len(b)
	if mask == nil && n == 2 {
		x0, x1 := x[0][:m], x[1][:m]
		a0, a1 := acc[0], acc[1]
		for k := range b {
			d0, d1 := x0[k]-b[k], x1[k]-b[k]
			a0 += d0 * d0
			a1 += d1 * d1
		}
		acc[0], acc[1] = a0, a1
		return
	}
	for i := range n {
		xi := x[i][:m]
		a := acc[i]
		if mask == nil {
			for k := range b {
				d := xi[k] - b[k]
				a += d * d
			}
		} else {
			mask := mask[:m]
			for k := range b {
				d := xi[k] - b[k]
				// adding +0 leaves a unchanged: a starts at +0 and
				// never becomes -0
				a += math.Float64frombits(math.Float64bits(d*d) & mask[k])
			}
		}
		acc[i] = a
	}
}

// sceCombine writes base + sum_agree w_i T_i / max(sum_agree w_i, 1e-6) for
// the entries of a block whose mask is all ones (nil: every entry), the
// base elsewhere: the reference formula's float64 operations, in its order,
// without branches (an agreeing entry adds d w_i and w_i, another adds +0,
// which leaves the sums unchanged: they start at +0 and never become -0).
func sceCombine(out []float64, x [][]float64, b, w []float64, mask []uint64) {
	m := 0
	if haveAVX512 && len(x) == 2 {
		if m = len(out) &^ 7; m > 0 {
			sceCombine2x512(&out[0], &x[0][0], &x[1][0], &b[0], m, &combineParams{w0: w[0], w1: w[1]})
		}
	}
	tail := make([][]float64, 0, 8)
	for _, xi := range x {
		tail = append(tail, xi[m:])
	}
	sceCombineGo(out[m:], tail, b[m:], w)
	if mask != nil {
		mask, b := mask[:len(out)], b[:len(out)]
		for k := range out {
			out[k] = math.Float64frombits(math.Float64bits(out[k])&mask[k] | math.Float64bits(b[k])&^mask[k])
		}
	}
}

// sceCombineGo is sceCombine in Go, without the mask.
func sceCombineGo(out []float64, x [][]float64, b, w []float64) {
	n := len(x)
	m := len(out)
	b = b[:m]
	if n == 2 {
		x0, x1 := x[0][:m], x[1][:m]
		w0, w1 := w[0], w[1]
		wb0, wb1 := math.Float64bits(w0), math.Float64bits(w1)
		for k := range out {
			d0, d1 := x0[k]-b[k], x1[k]-b[k]
			var sum float64
			sum += d0
			sum += d1
			pos, neg := b2u(sum >= 0), b2u(sum < 0)
			a0 := -(b2u(d0 > 0)&pos | b2u(d0 < 0)&neg)
			a1 := -(b2u(d1 > 0)&pos | b2u(d1 < 0)&neg)
			var num, den float64
			num += math.Float64frombits(math.Float64bits(d0*w0) & a0)
			den += math.Float64frombits(wb0 & a0)
			num += math.Float64frombits(math.Float64bits(d1*w1) & a1)
			den += math.Float64frombits(wb1 & a1)
			out[k] = b[k] + num/max(den, 1e-6)
		}
	} else {
		for k := range out {
			bk := b[k]
			var sum float64
			for i := range n {
				sum += x[i][k] - bk
			}
			pos, neg := b2u(sum >= 0), b2u(sum < 0)
			var num, den float64
			for i := range n {
				d := x[i][k] - bk
				a := -(b2u(d > 0)&pos | b2u(d < 0)&neg)
				num += math.Float64frombits(math.Float64bits(d*w[i]) & a)
				den += math.Float64frombits(math.Float64bits(w[i]) & a)
			}
			out[k] = bk + num/max(den, 1e-6)
		}
	}
}

// sceBuffers are per-goroutine block buffers: keys and a mask.
type sceBuffers struct{ keys, mask []uint64 }

var scePool = sync.Pool{New: func() any {
	return &sceBuffers{keys: make([]uint64, BlockSize), mask: make([]uint64, BlockSize)}
}}

// sceMask returns the kept mask of a block (nil when every entry is
// kept); bufs must be returned to scePool after use.
func sceMask(bufs *sceBuffers, x [][]float64, b []float64, thr Threshold, lo int) []uint64 {
	if thr == keepAll {
		return nil
	}
	keys, mask := bufs.keys[:len(b)], bufs.mask[:len(b)]
	sceKeys(keys, x, b)
	sceKept(mask, keys, thr, lo)
	return mask
}

// Tensor: with select_topk < 1, a pass counting the non-zero variances and
// an exact top-k selection of the variances (select.go); a pass for the
// weights; then an elementwise kernel. Memory: the selection's.
func (sceMerger) Tensor(ctx context.Context, t *TensorJob) (*Kernel, error) {
	xs := t.others()
	n := len(xs)
	if n == 0 {
		return &Kernel{Inputs: []*Input{t.Base}, Coef: []float64{1}}, nil
	}
	ins := append(append([]*Input{}, xs...), t.Base)
	topk := t.Job.Plan.Float("select_topk")
	thr := keepAll
	if topk < 1 {
		nz, err := t.Sums(ctx, ins, 1, func(_ int, in [][]float64, acc []float64) error {
			bufs := scePool.Get().(*sceBuffers)
			defer scePool.Put(bufs)
			keys := bufs.keys[:len(in[n])]
			sceKeys(keys, in[:n], in[n])
			var c uint64
			for _, key := range keys {
				c += b2u(key != 0) // +0 is the only zero variance (never -0)
			}
			acc[0] = float64(c)
			return nil
		})
		if err != nil {
			return nil, err
		}
		k := int(nz[0] * topk)
		if k <= 0 {
			thr = keepNone
		} else {
			sel := newSelection(k, t.N)
			key := func(_ int, in [][]float64, keys []uint64) {
				sceKeys(keys, in[:n], in[n])
			}
			uses := make([]int, n+1)
			for i := range uses {
				uses[i] = i
			}
			if err := selectTop(ctx, t, ins, [][]int{uses}, []*selection{sel}, []func(int, [][]float64, []uint64){key}); err != nil {
				return nil, err
			}
			thr = sel.res
		}
	}
	sq, err := t.Sums(ctx, ins, n, func(lo int, in [][]float64, acc []float64) error {
		bufs := scePool.Get().(*sceBuffers)
		defer scePool.Put(bufs)
		sceSquares(acc, in[:n], in[n], sceMask(bufs, in[:n], in[n], thr, lo))
		return nil
	})
	if err != nil {
		return nil, err
	}
	w := make([]float64, n)
	var sw float64
	for i := range w {
		w[i] = sq[i] / float64(t.N)
		sw += w[i]
	}
	for i := range w {
		if math.Abs(sw) < 1e-6 {
			w[i] = 1 / float64(n)
		} else {
			w[i] /= sw
		}
	}
	return &Kernel{Inputs: ins, Fn: func(lo int, in [][]float64, out []float64) {
		bufs := scePool.Get().(*sceBuffers)
		defer scePool.Put(bufs)
		sceCombine(out, in[:n], in[n], w, sceMask(bufs, in[:n], in[n], thr, lo))
	}}, nil
}
