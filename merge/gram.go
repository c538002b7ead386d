package merge

import "context"

// gram returns the Gram matrix G[i][j] = (x_i - b) . (x_j - b) of the
// inputs over the whole tensor (b = 0 without a base), in one streaming
// pass of float64 sums taken block by block in block order.
func gram(ctx context.Context, t *TensorJob, xs []*Input, base *Input) ([][]float64, error) {
	n := len(xs)
	ins := append([]*Input{}, xs...)
	if base != nil {
		ins = append(ins, base)
	}
	width := n * (n + 1) / 2
	sums, err := t.Sums(ctx, ins, width, func(_ int, in [][]float64, acc []float64) error {
		if base != nil {
			stockGram(in[:n], in[n], acc)
			return nil
		}
		gramSums(in[:n], acc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	g := make([][]float64, n)
	for i := range g {
		g[i] = make([]float64, n)
	}
	s := 0
	for i := range n {
		for j := i; j < n; j++ {
			g[i][j], g[j][i] = sums[s], sums[s]
			s++
		}
	}
	return g, nil
}

// combination is the kernel of sum_i c_i (x_i - b) + b (or sum_i c_i x_i
// without a base) as coefficients of the inputs.
func combination(xs []*Input, base *Input, c []float64) *Kernel {
	k := &Kernel{}
	cb := 1.0
	for i, x := range xs {
		k.Inputs = append(k.Inputs, x)
		k.Coef = append(k.Coef, c[i])
		cb -= c[i]
	}
	if base != nil {
		k.Inputs = append(k.Inputs, base)
		k.Coef = append(k.Coef, cb)
	}
	return k
}

// gramSums adds the inputs' Gram matrix's upper triangle (i <= j, row by
// row) into acc, each sum taking the elements in order (held in a
// register, not in acc, between two elements).
func gramSums(x [][]float64, acc []float64) {
	n := len(x)
	m := len(x[0])
	if n == 2 {
		x0, x1 := x[0][:m], x[1][:m]
		a00, a01, a11 := acc[0], acc[1], acc[2]
		for k, v0 := range x0 {
			v1 := x1[k]
			a00 += v0 * v0
			a01 += v0 * v1
			a11 += v1 * v1
		}
		acc[0], acc[1], acc[2] = a00, a01, a11
		return
	}
	s := 0
	for i := range n {
		xi := x[i][:m]
		for j := i; j < n; j++ {
			xj := x[j][:m]
			a := acc[s]
			for k, v := range xi {
				a += v * xj[k]
			}
			acc[s] = a
			s++
		}
	}
}
