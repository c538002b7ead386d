package nn

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
)

// PointKind says what a statistics entry describes.
type PointKind int

// The kinds of statistics entries (docs/stats.md).
const (
	// ModuleInput is the vector a Linear, Conv1D or convolution module's
	// weight multiplies (a convolution's unfolded patch); named after the
	// module.
	ModuleInput PointKind = iota
	// Activation is the network's activation at a point, one feature per
	// unit of an internal space (the residual stream at a block boundary,
	// a ResNet stage's channels after a block, a block's hidden channels);
	// named "MODULE:in" or "MODULE:out" after the module it enters or
	// leaves.
	Activation
)

func (k PointKind) String() string {
	if k == ModuleInput {
		return "module input"
	}
	return "activation"
}

// Point is one entry of a statistics file the engine can record.
type Point struct {
	// Name is the entry's name in the statistics file.
	Name string
	Kind PointKind
	// Module is the module whose input it is, or the module (a layer, a
	// block, a norm) it enters or leaves: "layer1.0" for "layer1.0:out".
	Module string
	// Space is the io/arch activation space its features index (for a
	// convolution's patch: the space of its input channels, times the
	// kernel positions).
	Space string
	// Dim is the number of features.
	Dim int
}

// IsActivation reports whether a statistics entry name is an activation
// point ("M:in", "M:out") rather than a module's input.
func IsActivation(name string) bool {
	for i := len(name) - 1; i >= 0 && name[i] != '.'; i-- {
		if name[i] == ':' {
			return true
		}
	}
	return false
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) { return maps.Keys(m) }

// checkData checks that the data fits the network's input.
func checkData(n *Net, d *Data) error {
	in := n.Input()
	if d.N == 0 {
		return fmt.Errorf("%s: no samples", d.where())
	}
	switch in.Kind {
	case Tokens:
		if !d.Tokens {
			return fmt.Errorf("%s: tensor %q holds floating values; the model reads token ids (an integer tensor [sequences, length])", d.where(), d.Key)
		}
		if in.MaxLen > 0 && d.Shape[0] > in.MaxLen {
			return fmt.Errorf("%s: sequences of %d tokens; the model's position embeddings stop at %d", d.where(), d.Shape[0], in.MaxLen)
		}
	case Images:
		if _, _, _, err := d.imageShape(in); err != nil {
			return err
		}
	}
	return nil
}

// prepare sets a batch's image shape for a network.
func prepare(n *Net, d *Data, b *batch) error {
	if err := checkData(n, d); err != nil {
		return err
	}
	if !d.Tokens {
		var err error
		b.c, b.h, b.w, err = d.imageShape(n.Input())
		return err
	}
	return nil
}

// checkTokens checks the ids of a batch against the vocabulary.
func checkTokens(b *batch, vocab int, d *Data) error {
	for i, id := range b.ids {
		if int(id) >= vocab {
			return fmt.Errorf("%s: tensor %q: token id %d at sequence %d, position %d is outside the vocabulary of %d", d.where(), d.Key, id, b.lo+i/b.t, i%b.t, vocab)
		}
	}
	return nil
}

// Forward runs samples [lo, hi) of the data through the network and returns
// the logits: one row per image, or per token (sequences x length rows).
func Forward(ctx context.Context, n *Net, d *Data, lo, hi int) (logits []float32, rows, cols int, err error) {
	if lo < 0 || hi > d.N || lo >= hi {
		return nil, 0, 0, fmt.Errorf("samples [%d, %d) of %d", lo, hi, d.N)
	}
	p, err := newPass(ctx, []*Net{n})
	if err != nil {
		return nil, 0, 0, err
	}
	var b batch
	if err := prepare(n, d, &b); err != nil {
		return nil, 0, 0, err
	}
	if err := d.read(&b, lo, hi); err != nil {
		return nil, 0, 0, err
	}
	out, err := p.run(&b)
	if err != nil {
		return nil, 0, 0, err
	}
	y := out[0]
	return slices.Clone(y.x[:y.rows()*y.c]), y.rows(), y.c, nil
}

// EvalOptions control Evaluate.
type EvalOptions struct {
	// BatchSize is the number of samples (images or sequences) per batch
	// (default 128 images, at most 8 sequences, fewer when their logits
	// would exceed 256 MiB); it changes the result only by float32 rounding.
	BatchSize int
	// Limit caps the number of samples (0: all).
	Limit int
	// Progress, if set, is called after each batch with samples done and total.
	Progress func(done, total int)
}

// Result is what Evaluate measures.
type Result struct {
	// Samples is the number of images or sequences run.
	Samples int
	// Predictions is the number of predictions scored: images, or
	// next-token predictions (sequences x (length - 1)).
	Predictions int64
	// Accuracy is the fraction of correct top-1 predictions.
	Accuracy float64
	// Loss is the mean cross-entropy (natural log) per prediction.
	Loss float64
	// Perplexity is exp(Loss) for language models (0 for classifiers).
	Perplexity float64
}

// Evaluate measures a classifier's accuracy and mean cross-entropy on
// labelled images, or a causal language model's next-token accuracy,
// cross-entropy and perplexity on token sequences (every position but the
// last predicts the next token).
func Evaluate(ctx context.Context, n *Net, d *Data, opts EvalOptions) (Result, error) {
	var res Result
	p, err := newPass(ctx, []*Net{n})
	if err != nil {
		return res, err
	}
	var b batch
	if err := prepare(n, d, &b); err != nil {
		return res, err
	}
	lm := d.Tokens && n.Input().Causal
	if !lm && d.Labels == nil {
		if d.Tokens {
			return res, fmt.Errorf("%s: the model is not a causal language model (no perplexity) and the data has no labels", d.where())
		}
		return res, fmt.Errorf("%s: no labels to evaluate the classifier against", d.where())
	}
	bs := defaultBatch(n, d, opts.BatchSize, 128)
	total := d.N
	if opts.Limit > 0 {
		total = min(total, opts.Limit)
	}
	var loss float64
	var correct int64
	for lo := 0; lo < total; lo += bs {
		if err := p.check(); err != nil {
			return res, err
		}
		hi := min(lo+bs, total)
		if err := d.read(&b, lo, hi); err != nil {
			return res, err
		}
		out, err := p.run(&b)
		if err != nil {
			return res, fmt.Errorf("batch at sample %d: %w", lo, err)
		}
		y := out[0]
		if lm {
			t := b.t
			for s := range b.n {
				for q := 0; q+1 < t; q++ {
					l, ok := crossEntropy(y.x[(s*t+q)*y.c:][:y.c], int(b.ids[s*t+q+1]))
					loss += l
					if ok {
						correct++
					}
					res.Predictions++
				}
			}
		} else {
			if y.rows() != b.n {
				return res, fmt.Errorf("the model gives %d rows of logits for %d samples: not a classifier", y.rows(), b.n)
			}
			for s := range b.n {
				lab := b.labels[s]
				if lab >= y.c {
					return res, fmt.Errorf("%s: label %d of sample %d is out of range for %d classes", d.where(), lab, lo+s, y.c)
				}
				l, ok := crossEntropy(y.x[s*y.c:][:y.c], lab)
				loss += l
				if ok {
					correct++
				}
				res.Predictions++
			}
		}
		res.Samples = hi
		if opts.Progress != nil {
			opts.Progress(hi, total)
		}
	}
	if res.Predictions == 0 {
		return res, fmt.Errorf("%s: nothing to predict (sequences of one token)", d.where())
	}
	res.Loss = loss / float64(res.Predictions)
	res.Accuracy = float64(correct) / float64(res.Predictions)
	if lm {
		res.Perplexity = math.Exp(res.Loss)
	}
	return res, nil
}

// crossEntropy returns -log softmax(z)[y] (float64) and whether y is the
// top-1 class (the first maximum).
func crossEntropy(z []float32, y int) (float64, bool) {
	best := 0
	m := float64(z[0])
	for j, v := range z {
		if float64(v) > m {
			m, best = float64(v), j
		}
	}
	var s float64
	for _, v := range z {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s) - float64(z[y]), best == y
}

// defaultBatch is the batch size: the one asked for, or for token
// sequences at most 8 and as many as keep the logits within 256 MiB
// (sequences x length x vocabulary floats), or def images.
func defaultBatch(n *Net, d *Data, asked, def int) int {
	if asked > 0 {
		return asked
	}
	if !d.Tokens {
		return def
	}
	per := d.Shape[0] * max(n.Input().Classes, 1) * 4
	return max(1, min(8, (256<<20)/per))
}
