package nn

import (
	"context"
	"fmt"
	"math"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/tensors"
)

// bnAcc is a BatchNorm's running statistics being recomputed (float64).
type bnAcc struct {
	mean, vr []float64
	batches  int64
}

// batchNorm applies a BatchNorm module in place: with the running
// statistics (eval mode), or with the batch's own mean and biased variance
// (train mode), updating the running statistics as PyTorch does.
func (p *pass) batchNorm(module string, xs []fm, eps float64) error {
	for i, l := range p.lanes {
		x := xs[i]
		c := x.c
		w, b := l.net.param(module, "weight"), l.net.param(module, "bias")
		rm, rv := l.net.param(module, "running_mean"), l.net.param(module, "running_var")
		if len(rm) != c || len(rv) != c {
			return fmt.Errorf("module %q: running statistics of %d/%d channels for %d channels", module, len(rm), len(rv), c)
		}
		scale, shift := make([]float32, c), make([]float32, c)
		rows := x.rows()
		v := x.x[:rows*c]
		if !p.train {
			for j := range c {
				s := 1 / math.Sqrt(float64(rv[j])+eps)
				if w != nil {
					s *= float64(w[j])
				}
				sh := -float64(rm[j]) * s
				if b != nil {
					sh += float64(b[j])
				}
				scale[j], shift[j] = float32(s), float32(sh)
			}
		} else {
			if rows < 2 {
				return fmt.Errorf("module %q: BatchNorm in training mode needs more than one value per channel (batch of %d)", module, rows)
			}
			mean, vr := make([]float64, c), make([]float64, c)
			for r := range rows {
				for j, a := range v[r*c : (r+1)*c] {
					mean[j] += float64(a)
				}
			}
			for j := range mean {
				mean[j] /= float64(rows)
			}
			for r := range rows {
				for j, a := range v[r*c : (r+1)*c] {
					d := float64(a) - mean[j]
					vr[j] += d * d
				}
			}
			for j := range vr {
				vr[j] /= float64(rows) // biased: what the batch is normalised with
				s := 1 / math.Sqrt(vr[j]+eps)
				if w != nil {
					s *= float64(w[j])
				}
				sh := -mean[j] * s
				if b != nil {
					sh += float64(b[j])
				}
				scale[j], shift[j] = float32(s), float32(sh)
			}
			acc := l.bn[module]
			if acc == nil {
				return fmt.Errorf("module %q: BatchNorm statistics are not being recomputed", module)
			}
			acc.batches++
			f := p.momentum
			if f == 0 { // momentum=None: cumulative moving average
				f = 1 / float64(acc.batches)
			}
			unbias := float64(rows) / float64(rows-1)
			for j := range c {
				acc.mean[j] = (1-f)*acc.mean[j] + f*mean[j]
				acc.vr[j] = (1-f)*acc.vr[j] + f*vr[j]*unbias
			}
		}
		for r := range rows {
			row := v[r*c : (r+1)*c]
			for j, a := range row {
				row[j] = a*scale[j] + shift[j]
			}
		}
	}
	return nil
}

// BNOptions control RecomputeBatchNorm.
type BNOptions struct {
	// BatchSize is the number of samples per batch (default 64). It
	// changes the result: each batch is normalised with its own statistics.
	BatchSize int
	// Batches caps the number of batches run (0: the whole data set). The
	// PLeaS paper's code runs about 100 training batches.
	Batches int
	// Momentum is PyTorch's BatchNorm momentum for the running averages;
	// 0 means momentum=None, the cumulative average over the batches
	// (each batch weighs the same), which is what REPAIR, ZipIt and
	// PLeaS's reset_bn_stats use and what merges should use.
	Momentum float64
	// Progress, if set, is called after each batch with samples done and total.
	Progress func(done, total int)
}

// RecomputeBatchNorm recomputes the running statistics of every BatchNorm
// of the network as PyTorch does when a network runs in training mode:
// they are reset (mean 0, variance 1, no batches tracked), then the data
// runs through the network batch by batch with every BatchNorm normalising
// with the batch's own mean and biased variance while its running mean and
// running variance (the unbiased batch variance) are averaged over the
// batches (opts.Momentum). The network's parameters are updated and the
// new tensors returned: for each BatchNorm module M, M.running_mean and
// M.running_var in the checkpoint's dtype and M.num_batches_tracked (I64),
// in module order.
func RecomputeBatchNorm(ctx context.Context, n *Net, d *Data, opts BNOptions) ([]*tensors.Tensor, error) {
	var bns []*arch.Module
	for _, m := range n.Arch.Modules {
		if m.Kind == arch.BatchNorm {
			bns = append(bns, m)
		}
	}
	if len(bns) == 0 {
		return nil, fmt.Errorf("the model has no BatchNorm module")
	}
	if opts.Momentum < 0 || opts.Momentum > 1 {
		return nil, fmt.Errorf("BatchNorm momentum %g is not in [0, 1]", opts.Momentum)
	}
	p, err := newPass(ctx, []*Net{n})
	if err != nil {
		return nil, err
	}
	p.train, p.momentum = true, opts.Momentum
	l := p.lanes[0]
	l.bn = map[string]*bnAcc{}
	for _, m := range bns {
		c := m.OutFeatures
		acc := &bnAcc{mean: make([]float64, c), vr: make([]float64, c)}
		for j := range acc.vr {
			acc.vr[j] = 1
		}
		l.bn[m.Name] = acc
	}
	bs := opts.BatchSize
	if bs <= 0 {
		bs = 64
	}
	total := d.N
	if opts.Batches > 0 {
		total = min(total, opts.Batches*bs)
	}
	var b batch
	if err := prepare(n, d, &b); err != nil {
		return nil, err
	}
	for lo := 0; lo < total; lo += bs {
		if err := p.check(); err != nil {
			return nil, err
		}
		hi := min(lo+bs, total)
		if err := d.read(&b, lo, hi); err != nil {
			return nil, err
		}
		if _, err := p.run(&b); err != nil {
			return nil, fmt.Errorf("batch at sample %d: %w", lo, err)
		}
		if opts.Progress != nil {
			opts.Progress(hi, total)
		}
	}
	var out []*tensors.Tensor
	for _, m := range bns {
		acc := l.bn[m.Name]
		for _, f := range []struct {
			name string
			v    []float64
		}{{"running_mean", acc.mean}, {"running_var", acc.vr}} {
			par := m.Param(f.name)
			if par == nil {
				return nil, fmt.Errorf("module %q has no %s", m.Name, f.name)
			}
			for j, x := range f.v {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					return nil, fmt.Errorf("module %q: recomputed %s is %g at channel %d", m.Name, f.name, x, j)
				}
			}
			dt := n.dtypes[par.Tensor]
			t, err := tensors.FromFloat64(par.Tensor, dt, par.Shape, f.v)
			if err != nil {
				return nil, err
			}
			vals, err := t.Float32() // what the checkpoint will hold
			if err != nil {
				return nil, err
			}
			copy(n.params[par.Tensor], vals)
			out = append(out, t)
		}
		name := m.Name + ".num_batches_tracked"
		if par := m.Param("num_batches_tracked"); par != nil {
			name = par.Tensor
		}
		t, err := tensors.New(name, tensors.I64, []int64{})
		if err != nil {
			return nil, err
		}
		putI64(t.Data, acc.batches)
		out = append(out, t)
	}
	return out, nil
}

func putI64(b []byte, v int64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}
