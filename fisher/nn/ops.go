package nn

import (
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	_ "github.com/wtool/wtool/tensors/linalg" // fast GEMM kernels for gonum
)

func general(data []float32, rows, cols int) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data}
}

// matmulT computes out[rows, o] = x[rows, k] w[o, k]^T (+ bias).
func matmulT(out, x []float32, rows, k int, w []float32, o int, bias []float32) {
	if rows == 0 {
		return
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, general(x, rows, k), general(w, o, k), 0, general(out, rows, o))
	addBias(out, rows, o, bias)
}

// matmul computes out[rows, o] = x[rows, k] w[k, o] (+ bias): GPT-2's Conv1D.
func matmul(out, x []float32, rows, k int, w []float32, o int, bias []float32) {
	if rows == 0 {
		return
	}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(x, rows, k), general(w, k, o), 0, general(out, rows, o))
	addBias(out, rows, o, bias)
}

func addBias(out []float32, rows, o int, bias []float32) {
	if bias == nil {
		return
	}
	for r := range rows {
		row := out[r*o : (r+1)*o]
		for j, b := range bias {
			row[j] += b
		}
	}
}

// parallel runs f(i) for i in [0, n) on up to par goroutines (contiguous
// ranges), inline when par <= 1 or the work is small.
func parallel(par, n int, f func(lo, hi int)) {
	if par <= 1 || n < 2 {
		f(0, n)
		return
	}
	par = min(par, n)
	var wg sync.WaitGroup
	for g := range par {
		lo, hi := g*n/par, (g+1)*n/par
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(lo, hi)
		}()
	}
	wg.Wait()
}

// convGeom is a 2-D convolution's geometry.
type convGeom struct {
	kh, kw, stride, pad int
}

func (g convGeom) out(h, w int) (int, int) {
	return (h+2*g.pad-g.kh)/g.stride + 1, (w+2*g.pad-g.kw)/g.stride + 1
}

// im2col unfolds x into patches [n*ho*wo, c*kh*kw] in the order of
// torch.nn.functional.unfold (channel major, then kernel row, kernel
// column), the order of the weight's [out, in*kh*kw] matrix and of
// docs/stats.md. A 1x1 stride-1 convolution reads x itself.
func im2col(dst []float32, x fm, g convGeom, par int) ([]float32, int, int) {
	ho, wo := g.out(x.h, x.w)
	if g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0 {
		return x.x[:x.rows()*x.c], ho, wo
	}
	kk := g.kh * g.kw
	k := kk * x.c
	dst = dst[:x.n*ho*wo*k]
	c := x.c
	parallel(par, x.n, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			for oh := range ho {
				for ow := range wo {
					row := dst[((n*ho+oh)*wo+ow)*k:][:k]
					for i := range g.kh {
						ih := oh*g.stride - g.pad + i
						for j := range g.kw {
							iw := ow*g.stride - g.pad + j
							q := i*g.kw + j
							if ih < 0 || ih >= x.h || iw < 0 || iw >= x.w {
								for ch := range c {
									row[ch*kk+q] = 0
								}
								continue
							}
							src := x.x[((n*x.h+ih)*x.w+iw)*c:][:c]
							for ch, v := range src {
								row[ch*kk+q] = v
							}
						}
					}
				}
			}
		}
	})
	return dst, ho, wo
}

// conv runs a convolution module on every lane: patches, recorded as the
// module's input, times the weight.
func (p *pass) conv(module string, xs []fm, g convGeom) ([]fm, error) {
	n0 := p.lanes[0].net
	m, ok := n0.Arch.Module(module)
	if !ok {
		return nil, fmt.Errorf("module %q is missing", module)
	}
	sh := m.Weight().Shape
	if len(sh) != 4 || int(sh[2]) != g.kh || int(sh[3]) != g.kw {
		return nil, fmt.Errorf("module %q: weight %v is not a %dx%d 2-D convolution", module, sh, g.kh, g.kw)
	}
	cout, cin := int(sh[0]), int(sh[1])
	if xs[0].c != cin {
		return nil, fmt.Errorf("module %q reads %d channels, its input has %d", module, cin, xs[0].c)
	}
	k := cin * g.kh * g.kw
	patches := make([][]float32, len(xs))
	var ho, wo int
	for i, l := range p.lanes {
		x := xs[i]
		h2, w2 := g.out(x.h, x.w)
		if need := x.n * h2 * w2 * k; cap(l.patch) < need {
			l.patch = make([]float32, need)
		}
		patches[i], ho, wo = im2col(l.patch, x, g, p.par)
	}
	if ho <= 0 || wo <= 0 {
		return nil, fmt.Errorf("module %q: a %dx%d input is too small for its %dx%d kernel", module, xs[0].h, xs[0].w, g.kh, g.kw)
	}
	rows := xs[0].n * ho * wo
	if err := p.recordRaw(module, patches, rows, k); err != nil {
		return nil, err
	}
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		y := l.ar.get(rows * cout)
		matmulT(y, patches[i], rows, k, l.net.param(module, "weight"), cout, l.net.param(module, "bias"))
		out[i] = fm{x: y, n: xs[i].n, h: ho, w: wo, c: cout}
	}
	return out, nil
}

// linear runs a Linear module (weight [out, in]) on every lane, recording
// its input.
func (p *pass) linear(module string, xs []fm) ([]fm, error) {
	n0 := p.lanes[0].net
	m, ok := n0.Arch.Module(module)
	if !ok || m.Weight() == nil {
		return nil, fmt.Errorf("module %q is missing", module)
	}
	if xs[0].c != m.InFeatures {
		return nil, fmt.Errorf("module %q reads %d features, its input has %d", module, m.InFeatures, xs[0].c)
	}
	if err := p.record(module, xs); err != nil {
		return nil, err
	}
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		y := l.ar.get(x.rows() * m.OutFeatures)
		w := l.net.param(module, "weight")
		if m.Kind == "conv1d" {
			matmul(y, x.x, x.rows(), m.InFeatures, w, m.OutFeatures, l.net.param(module, "bias"))
		} else {
			matmulT(y, x.x, x.rows(), m.InFeatures, w, m.OutFeatures, l.net.param(module, "bias"))
		}
		out[i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: m.OutFeatures}
	}
	return out, nil
}

// relu applies max(x, 0) in place.
func relu(xs []fm) {
	for _, x := range xs {
		v := x.x[:x.rows()*x.c]
		for i, a := range v {
			if a < 0 {
				v[i] = 0
			}
		}
	}
}

// addInto adds ys to xs in place (residual connections).
func addInto(xs, ys []fm) {
	for i, x := range xs {
		v, w := x.x[:x.rows()*x.c], ys[i].x[:x.rows()*x.c]
		for j := range v {
			v[j] += w[j]
		}
	}
}

// maxpool is a max pool with -inf padding.
func (p *pass) maxpool(xs []fm, g convGeom) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		ho, wo := g.out(x.h, x.w)
		y := l.ar.get(x.n * ho * wo * x.c)
		c := x.c
		for n := range x.n {
			for oh := range ho {
				for ow := range wo {
					dst := y[((n*ho+oh)*wo+ow)*c:][:c]
					for j := range dst {
						dst[j] = float32(math.Inf(-1))
					}
					for a := range g.kh {
						ih := oh*g.stride - g.pad + a
						if ih < 0 || ih >= x.h {
							continue
						}
						for b := range g.kw {
							iw := ow*g.stride - g.pad + b
							if iw < 0 || iw >= x.w {
								continue
							}
							src := x.x[((n*x.h+ih)*x.w+iw)*c:][:c]
							for j, v := range src {
								if v > dst[j] {
									dst[j] = v
								}
							}
						}
					}
				}
			}
		}
		out[i] = fm{x: y, n: x.n, h: ho, w: wo, c: c}
	}
	return out
}

// meanpool averages over positions (adaptive average pool to 1x1).
func (p *pass) meanpool(xs []fm) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		hw := x.h * x.w
		y := l.ar.get(x.n * x.c)
		for n := range x.n {
			acc := make([]float64, x.c)
			for q := range hw {
				for j, v := range x.x[(n*hw+q)*x.c:][:x.c] {
					acc[j] += float64(v)
				}
			}
			for j := range acc {
				y[n*x.c+j] = float32(acc[j] / float64(hw))
			}
		}
		out[i] = fm{x: y, n: x.n, h: 1, w: 1, c: x.c}
	}
	return out
}

// layerNorm normalises each row (biased variance) into a new buffer.
func (p *pass) layerNorm(module string, xs []fm, eps float64) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		w, b := l.net.param(module, "weight"), l.net.param(module, "bias")
		y := l.ar.get(x.rows() * x.c)
		for r := range x.rows() {
			src, dst := x.x[r*x.c:][:x.c], y[r*x.c:][:x.c]
			var mean float64
			for _, v := range src {
				mean += float64(v)
			}
			mean /= float64(x.c)
			var vr float64
			for _, v := range src {
				d := float64(v) - mean
				vr += d * d
			}
			inv := 1 / math.Sqrt(vr/float64(x.c)+eps)
			for j, v := range src {
				z := (float64(v) - mean) * inv
				if w != nil {
					z *= float64(w[j])
				}
				if b != nil {
					z += float64(b[j])
				}
				dst[j] = float32(z)
			}
		}
		out[i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: x.c}
	}
	return out
}

// rmsNorm computes x / sqrt(mean(x^2) + eps) * w (or * (1 + w), Gemma)
// into a new buffer.
func (p *pass) rmsNorm(module string, xs []fm, eps float64, plusOne bool) []fm {
	out := make([]fm, len(xs))
	for i, l := range p.lanes {
		x := xs[i]
		w := l.net.param(module, "weight")
		y := l.ar.get(x.rows() * x.c)
		for r := range x.rows() {
			src, dst := x.x[r*x.c:][:x.c], y[r*x.c:][:x.c]
			var ss float64
			for _, v := range src {
				ss += float64(v) * float64(v)
			}
			inv := 1 / math.Sqrt(ss/float64(x.c)+eps)
			for j, v := range src {
				s := float64(w[j])
				if plusOne {
					s += 1
				}
				dst[j] = float32(float64(v) * inv * s)
			}
		}
		out[i] = fm{x: y, n: x.n, h: x.h, w: x.w, c: x.c}
	}
	return out
}

// activation is an elementwise nonlinearity.
type activation func(float64) float64

func geluExact(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

func geluTanh(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

func silu(x float64) float64 { return x / (1 + math.Exp(-x)) }

func reluF(x float64) float64 { return max(x, 0) }

// parseAct maps Hugging Face's hidden_act names to functions.
func parseAct(name string) (activation, error) {
	switch name {
	case "gelu":
		return geluExact, nil
	case "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_approximate":
		return geluTanh, nil
	case "silu", "swish":
		return silu, nil
	case "relu":
		return reluF, nil
	case "tanh":
		return math.Tanh, nil
	}
	return nil, fmt.Errorf("activation %q is not supported (gelu, gelu_new, gelu_pytorch_tanh, silu, relu, tanh)", name)
}

// apply applies f in place.
func apply(xs []fm, f activation) {
	for _, x := range xs {
		v := x.x[:x.rows()*x.c]
		for i, a := range v {
			v[i] = float32(f(float64(a)))
		}
	}
}

func tanh64(x float64) float64 { return math.Tanh(x) }
