package mlp

import (
	"context"
	"fmt"

	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/stats"
	"github.com/wtool/wtool/tensors"
)

// Options control the collection passes.
type Options struct {
	// BatchSize is the number of samples per batch (default 256 for
	// statistics; Fisher callers should set it, as it changes the result).
	BatchSize int
	// Progress, if set, is called after each batch with samples done and total.
	Progress func(done, total int)
	// Source is recorded in the written files' metadata.
	Source string
}

func (o Options) batch() int {
	if o.BatchSize <= 0 {
		return 256
	}
	return o.BatchSize
}

func checkInputs(n *Network, in *Inputs) error {
	if in.Features != n.Inputs() {
		return fmt.Errorf("%s: calibration inputs %q have %d features, but the first layer %q takes %d", in.Path, in.Key, in.Features, n.Layers[0].Name, n.Inputs())
	}
	if in.Samples == 0 {
		return fmt.Errorf("%s: calibration tensor %q has no samples", in.Path, in.Key)
	}
	return nil
}

// CollectStats runs the calibration inputs through one network, giving
// single-model statistics of every layer's input, or through two networks of
// the same architecture, giving joint statistics (each model's and the cross
// Gram matrices) for activation matching and PLeaS.
func CollectStats(ctx context.Context, nets []*Network, in *Inputs, opts Options) (*stats.Stats, error) {
	if len(nets) < 1 || len(nets) > 2 {
		return nil, fmt.Errorf("statistics are for one model or a pair, not %d", len(nets))
	}
	for _, n := range nets {
		if err := checkInputs(n, in); err != nil {
			return nil, err
		}
	}
	joint := len(nets) == 2
	if joint {
		a, b := nets[0], nets[1]
		if len(a.Layers) != len(b.Layers) {
			return nil, fmt.Errorf("the models have %d and %d layers", len(a.Layers), len(b.Layers))
		}
		for l := range a.Layers {
			la, lb := a.Layers[l], b.Layers[l]
			if la.Name != lb.Name || la.In != lb.In || la.Out != lb.Out {
				return nil, fmt.Errorf("layer %d differs: %s [%d, %d] vs %s [%d, %d]", l, la.Name, la.Out, la.In, lb.Name, lb.Out, lb.In)
			}
		}
	}
	names := nets[0].Modules()
	dims := make([]int, len(names))
	for l, layer := range nets[0].Layers {
		dims[l] = layer.In
	}
	acc, err := stats.NewAccumulator(names, dims, joint)
	if err != nil {
		return nil, err
	}
	wss := make([]Workspace, len(nets))
	var x []float32
	bs := opts.batch()
	for lo := 0; lo < in.Samples; lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(lo+bs, in.Samples)
		if x, err = in.Batch(x, lo, hi); err != nil {
			return nil, err
		}
		for i, n := range nets {
			n.Forward(&wss[i], x, hi-lo)
		}
		for l, name := range names {
			if joint {
				err = acc.AddJoint(name, wss[0].Inputs[l], wss[1].Inputs[l], hi-lo)
			} else {
				err = acc.Add(name, wss[0].Inputs[l], hi-lo)
			}
			if err != nil {
				return nil, err
			}
		}
		acc.AddSamples(hi - lo)
		if opts.Progress != nil {
			opts.Progress(hi, in.Samples)
		}
	}
	return acc.Stats(opts.Source), nil
}

// CollectFisher computes the diagonal empirical Fisher information of the
// network: the mean over batches of the squared gradient of the batch's mean
// cross-entropy against labels. It returns one F32 tensor per parameter,
// named "<layer>.weight" and "<layer>.bias" like the checkpoint's.
func CollectFisher(ctx context.Context, n *Network, in *Inputs, labels []int, opts Options) ([]*tensors.Tensor, fisher.Meta, error) {
	var meta fisher.Meta
	if err := checkInputs(n, in); err != nil {
		return nil, meta, err
	}
	if len(labels) != in.Samples {
		return nil, meta, fmt.Errorf("%d labels for %d calibration samples", len(labels), in.Samples)
	}
	g := NewGradients(n)
	sumW := make([][]float64, len(n.Layers))
	sumB := make([][]float64, len(n.Layers))
	for l, layer := range n.Layers {
		sumW[l] = make([]float64, len(layer.W))
		if layer.B != nil {
			sumB[l] = make([]float64, len(layer.B))
		}
	}
	var ws Workspace
	var x []float32
	var err error
	bs := opts.batch()
	for lo := 0; lo < in.Samples; lo += bs {
		if err := ctx.Err(); err != nil {
			return nil, meta, err
		}
		hi := min(lo+bs, in.Samples)
		if x, err = in.Batch(x, lo, hi); err != nil {
			return nil, meta, err
		}
		loss, err := n.LossAndGradients(&ws, x, labels[lo:hi], g)
		if err != nil {
			return nil, meta, fmt.Errorf("batch at sample %d: %w", lo, err)
		}
		meta.Loss += loss
		meta.Batches++
		for l := range n.Layers {
			for i, v := range g.W[l] {
				sumW[l][i] += float64(v) * float64(v)
			}
			for i, v := range g.B[l] {
				sumB[l][i] += float64(v) * float64(v)
			}
		}
		if opts.Progress != nil {
			opts.Progress(hi, in.Samples)
		}
	}
	meta.Loss /= float64(meta.Batches)
	meta.BatchSize = int64(min(bs, in.Samples))
	meta.Samples = int64(in.Samples)
	meta.Source = opts.Source
	var out []*tensors.Tensor
	inv := 1 / float64(meta.Batches)
	for l, layer := range n.Layers {
		for i := range sumW[l] {
			sumW[l][i] *= inv
		}
		w, err := tensors.FromFloat64(layer.Name+".weight", tensors.F32, []int64{int64(layer.Out), int64(layer.In)}, sumW[l])
		if err != nil {
			return nil, meta, err
		}
		out = append(out, w)
		if layer.B != nil {
			for i := range sumB[l] {
				sumB[l][i] *= inv
			}
			b, err := tensors.FromFloat64(layer.Name+".bias", tensors.F32, []int64{int64(layer.Out)}, sumB[l])
			if err != nil {
				return nil, meta, err
			}
			out = append(out, b)
		}
	}
	return out, meta, nil
}

// Evaluate returns the network's accuracy and mean cross-entropy on labelled
// inputs.
func Evaluate(ctx context.Context, n *Network, in *Inputs, labels []int, batchSize int) (accuracy, loss float64, err error) {
	if err := checkInputs(n, in); err != nil {
		return 0, 0, err
	}
	if len(labels) != in.Samples {
		return 0, 0, fmt.Errorf("%d labels for %d samples", len(labels), in.Samples)
	}
	if batchSize <= 0 {
		batchSize = 512
	}
	var ws Workspace
	var x []float32
	correct := 0
	classes := n.Classes()
	for lo := 0; lo < in.Samples; lo += batchSize {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		hi := min(lo+batchSize, in.Samples)
		if x, err = in.Batch(x, lo, hi); err != nil {
			return 0, 0, err
		}
		l, err := n.LossAndGradients(&ws, x, labels[lo:hi], nil)
		if err != nil {
			return 0, 0, err
		}
		loss += l * float64(hi-lo)
		logits := ws.Pre[len(n.Layers)-1]
		for r := range hi - lo {
			z := logits[r*classes : (r+1)*classes]
			best := 0
			for j, v := range z {
				if v > z[best] {
					best = j
				}
			}
			if best == labels[lo+r] {
				correct++
			}
		}
	}
	return float64(correct) / float64(in.Samples), loss / float64(in.Samples), nil
}
