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
		for k := range in[0] {
			s := 0
			for i := range n {
				for j := i; j < n; j++ {
					acc[s] += in[i][k] * in[j][k]
					s++
				}
			}
		}
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
