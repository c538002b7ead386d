package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"

	"gonum.org/v1/gonum/mat"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/permute/lap"
)

// PLeaSOptions control PLeaS.
type PLeaSOptions struct {
	// Width is the merged hidden width as a multiple of the original, from
	// 1 (every unit merged) to 2 (both models' units kept side by side).
	Width float64
	// Ridge is added to the diagonal of each least-squares system, relative
	// to the system's mean diagonal (default 1e-6).
	Ridge float64
	// Perms, if set, are the matchings (Perms[g][i] is B's unit matched with
	// A's unit i); otherwise activation matching on the statistics is used.
	Perms permute.Perms
}

// unit of a merged layer: A's unit a and/or B's unit b (-1 when absent).
type unit struct{ a, b int }

// PLeaSResult is a merged network and how its layers were built.
type PLeaSResult struct {
	Net *mlp.Network
	// Widths are the merged widths of the hidden groups, in layer order.
	Widths []int
	// Correlation is the mean correlation of the merged pairs per group.
	Correlation []float64
}

// PLeaS merges two MLPs of the same architecture (Nasery et al., 2024):
// match the hidden units of every layer (by activation correlation, or the
// given permutations), merge the best-matched fraction of pairs so that the
// merged width is Width times the original (the rest of A's and B's units
// are kept, ordered [merged | A-only | B-only]), then refit every layer by
// least squares so that the merged layer maps the merged input features
// (pair averages, A-only and B-only features of the source models on the
// same data) to the merged targets (the source layers' pre-activations, pair
// averaged), with A-only units taking no input from B-only units and vice
// versa. The published method fits this with Adam; it is a linear least
// squares problem, solved here in closed form per row block from the joint
// second moments of the two models' layer inputs, which is all js must
// provide (module = layer name, joint kind).
func PLeaS(ctx context.Context, a, b *mlp.Network, js permute.JointStats, o PLeaSOptions) (*PLeaSResult, error) {
	if len(a.Layers) != len(b.Layers) {
		return nil, fmt.Errorf("pleas: the models have %d and %d layers", len(a.Layers), len(b.Layers))
	}
	for l := range a.Layers {
		la, lb := a.Layers[l], b.Layers[l]
		if la.In != lb.In || la.Out != lb.Out || (la.B == nil) != (lb.B == nil) {
			return nil, fmt.Errorf("pleas: layer %s differs between the models", la.Name)
		}
	}
	if o.Width == 0 {
		o.Width = 1
	}
	if !(o.Width >= 1 && o.Width <= 2) {
		return nil, fmt.Errorf("pleas: width %g must be between 1 and 2", o.Width)
	}
	if !(o.Ridge >= 0) || math.IsInf(o.Ridge, 0) {
		return nil, fmt.Errorf("pleas: ridge %g must be a finite number of at least 0", o.Ridge)
	}
	if o.Ridge == 0 {
		o.Ridge = 1e-6
	}
	res := &PLeaSResult{Net: &mlp.Network{Act: a.Act}}
	// 1-2: match and choose the merged units of every hidden group
	groups := make([][]unit, len(a.Layers)-1)
	for l := range groups {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		next := a.Layers[l+1].Name // its input is the group's features
		m, err := js.Module(next)
		if err != nil {
			return nil, fmt.Errorf("pleas: layer %s: %w", next, err)
		}
		corr, err := permute.Correlation(m)
		if err != nil {
			return nil, err
		}
		n := a.Layers[l].Out
		var match []int
		if o.Perms != nil {
			match = o.Perms[a.Layers[l].Name]
			if len(match) != n {
				return nil, fmt.Errorf("pleas: no permutation of %d units for group %s", n, a.Layers[l].Name)
			}
		} else {
			asg, err := lap.Solve(corr, n, n, true)
			if err != nil {
				return nil, err
			}
			match = asg.RowToCol
		}
		groups[l], res.Correlation = partialMerge(match, corr, n, o.Width), append(res.Correlation, meanMatched(match, corr, n, o.Width))
		res.Widths = append(res.Widths, len(groups[l]))
	}
	// 3: least squares, layer by layer
	for l := range a.Layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := js.Module(a.Layers[l].Name)
		if err != nil {
			return nil, fmt.Errorf("pleas: layer %s: %w", a.Layers[l].Name, err)
		}
		var in, out []unit
		if l > 0 {
			in = groups[l-1]
		}
		if l < len(groups) {
			out = groups[l]
		}
		layer, err := refit(ctx, a.Layers[l], b.Layers[l], m, in, out, o.Ridge)
		if err != nil {
			return nil, fmt.Errorf("pleas: layer %s: %w", a.Layers[l].Name, err)
		}
		res.Net.Layers = append(res.Net.Layers, layer)
	}
	return res, res.Net.Validate()
}

// partialMerge orders a group's merged units: the best-correlated
// round(n*(2-width)) pairs merged, then A's other units, then their B partners.
func partialMerge(match []int, corr []float64, n int, width float64) []unit {
	order := make([]int, n) // A units by decreasing correlation with their match
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		return corr[order[x]*n+match[order[x]]] > corr[order[y]*n+match[order[y]]]
	})
	merged := int(math.Round(float64(n) * (2 - width)))
	merged = max(0, min(n, merged))
	var us []unit
	for _, i := range order[:merged] {
		us = append(us, unit{a: i, b: match[i]})
	}
	rest := slices.Clone(order[merged:])
	slices.Sort(rest)
	for _, i := range rest {
		us = append(us, unit{a: i, b: -1})
	}
	for _, i := range rest {
		us = append(us, unit{a: -1, b: match[i]})
	}
	return us
}

func meanMatched(match []int, corr []float64, n int, _ float64) float64 {
	var s float64
	for i, j := range match {
		s += corr[i*n+j]
	}
	return s / float64(n)
}

// refit solves one merged layer in closed form. With the joint input vector
// v = [x_A; x_B; 1] of the two source layers and M = E[v v^T] (from the joint
// statistics), the merged inputs are Z = P v and the targets T = Q v, so the
// normal equations need only P M P^T and P M Q^T.
func refit(ctx context.Context, la, lb mlp.Layer, st *stats.Module, in, out []unit, ridge float64) (mlp.Layer, error) {
	d := la.In
	if st.Dim != d || st.Cross == nil {
		return mlp.Layer{}, fmt.Errorf("joint statistics of %d features needed, got %d (joint=%v)", d, st.Dim, st.Cross != nil)
	}
	bias := la.B != nil
	D := 2*d + 1
	n := float64(st.Count)
	M := mat.NewDense(D, D, nil)
	for i := range d {
		for j := range d {
			M.Set(i, j, st.Gram[i*d+j]/n)
			M.Set(d+i, d+j, st.GramB[i*d+j]/n)
			M.Set(i, d+j, st.Cross[i*d+j]/n)
			M.Set(d+j, i, st.Cross[i*d+j]/n)
		}
		M.Set(i, 2*d, st.Sum[i]/n)
		M.Set(2*d, i, st.Sum[i]/n)
		M.Set(d+i, 2*d, st.SumB[i]/n)
		M.Set(2*d, d+i, st.SumB[i]/n)
	}
	M.Set(2*d, 2*d, 1)
	// merged input features (the raw input is the same for both models)
	var inUnits []unit
	if in == nil {
		for i := range d {
			inUnits = append(inUnits, unit{a: i, b: -1})
		}
	} else {
		inUnits = in
	}
	nin := len(inUnits)
	zdim := nin
	if bias {
		zdim++
	}
	P := mat.NewDense(zdim, D, nil)
	for r, u := range inUnits {
		switch {
		case u.a >= 0 && u.b >= 0:
			P.Set(r, u.a, 0.5)
			P.Set(r, d+u.b, 0.5)
		case u.a >= 0:
			P.Set(r, u.a, 1)
		default:
			P.Set(r, d+u.b, 1)
		}
	}
	if bias {
		P.Set(nin, 2*d, 1)
	}
	var outUnits []unit
	if out == nil { // last layer: the average of the two models' outputs
		for o := range la.Out {
			outUnits = append(outUnits, unit{a: o, b: o})
		}
	} else {
		outUnits = out
	}
	Q := mat.NewDense(len(outUnits), D, nil)
	addRow := func(r int, l mlp.Layer, idx, off int, s float64) {
		for c := range d {
			Q.Set(r, off+c, Q.At(r, off+c)+s*float64(l.W[idx*d+c]))
		}
		if l.B != nil {
			Q.Set(r, 2*d, Q.At(r, 2*d)+s*float64(l.B[idx]))
		}
	}
	for r, u := range outUnits {
		switch {
		case u.a >= 0 && u.b >= 0:
			addRow(r, la, u.a, 0, 0.5)
			addRow(r, lb, u.b, d, 0.5)
		case u.a >= 0:
			addRow(r, la, u.a, 0, 1)
		default:
			addRow(r, lb, u.b, d, 1)
		}
	}
	var PM, ZZ, ZT mat.Dense
	PM.Mul(P, M)
	ZZ.Mul(&PM, P.T())
	ZT.Mul(&PM, Q.T())
	layer := mlp.Layer{Name: la.Name, Out: len(outUnits), In: nin, W: make([]float32, len(outUnits)*nin)}
	if bias {
		layer.B = make([]float32, len(outUnits))
	}
	// row blocks by allowed inputs: merged rows see everything, A-only rows
	// no B-only inputs, B-only rows no A-only inputs
	kinds := func(u unit) int {
		switch {
		case u.a >= 0 && u.b >= 0:
			return 0
		case u.a >= 0:
			return 1
		}
		return 2
	}
	for block := range 3 {
		var rows []int
		for r, u := range outUnits {
			if kinds(u) == block {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		var cols []int
		for c, u := range inUnits {
			if in != nil && ((block == 1 && kinds(u) == 2) || (block == 2 && kinds(u) == 1)) {
				continue
			}
			cols = append(cols, c)
		}
		if bias {
			cols = append(cols, nin)
		}
		if err := ctx.Err(); err != nil {
			return mlp.Layer{}, err
		}
		w, err := solveBlock(&ZZ, &ZT, cols, rows, ridge, bias)
		if err != nil {
			return mlp.Layer{}, err
		}
		for ri, r := range rows {
			for ci, c := range cols {
				if c == nin {
					layer.B[r] = float32(w.At(ci, ri))
				} else {
					layer.W[r*nin+c] = float32(w.At(ci, ri))
				}
			}
		}
	}
	return layer, nil
}

// solveBlock solves (ZZ[cols,cols] + ridge) X = ZT[cols, rows] by Cholesky
// (the ridge, relative to the mean diagonal, spares the bias column). A
// singular system is retried with ten times the ridge, up to a ridge of 1.
func solveBlock(zz, zt *mat.Dense, cols, rows []int, ridge float64, bias bool) (*mat.Dense, error) {
	k := len(cols)
	a := mat.NewSymDense(k, nil)
	var meanDiag float64
	for i, ci := range cols {
		meanDiag += zz.At(ci, ci)
		for j := i; j < k; j++ {
			a.SetSym(i, j, zz.At(ci, cols[j]))
		}
	}
	meanDiag /= float64(k)
	nb := k
	if bias {
		nb = k - 1
	}
	rhs := mat.NewDense(k, len(rows), nil)
	for i, ci := range cols {
		for j, rj := range rows {
			rhs.Set(i, j, zt.At(ci, rj))
		}
	}
	for r := ridge; ; r *= 10 {
		b := mat.NewSymDense(k, nil)
		b.CopySym(a)
		for i := range nb {
			b.SetSym(i, i, b.At(i, i)+r*meanDiag)
		}
		var ch mat.Cholesky
		if ch.Factorize(b) {
			var x mat.Dense
			if err := ch.SolveTo(&x, rhs); err == nil {
				return &x, nil
			}
		}
		if !(r > 0 && r < 1) { // also stops a zero or invalid ridge
			break
		}
	}
	return nil, fmt.Errorf("least-squares system is singular even with a ridge")
}

// updatedConfig rewrites a model's config.json for the merged widths: a
// "sizes" list (wtool's MLP convention) is replaced, and the merge recorded
// under "wtool_merge". A missing config gives nil.
func updatedConfig(path string, n *mlp.Network, p *Plan) ([]byte, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sizes := []int{n.Layers[0].In}
	for _, l := range n.Layers {
		sizes = append(sizes, l.Out)
	}
	if _, ok := cfg["sizes"]; ok {
		cfg["sizes"] = sizes
	}
	cfg["wtool_merge"] = map[string]any{"method": p.Method, "width": p.Float("width"), "match": p.Global("match").Text}
	out, err := json.MarshalIndent(cfg, "", "  ")
	return append(out, '\n'), err
}
