package nn

import (
	"context"
	"fmt"
)

// family is one architecture's forward pass. Its methods take the
// structure from the net it was built for and the parameters from each
// lane's net, so that one pass runs two models of the same architecture
// side by side (joint statistics).
type family interface {
	input() Input
	points() []Point
	// forward runs the batch through every lane and returns each lane's
	// logits (rows x classes: one row per image, or per token).
	forward(p *pass, b *batch) ([]fm, error)
}

// InputKind is what a network reads.
type InputKind int

// The input kinds.
const (
	Images InputKind = iota // float images [C, H, W]
	Tokens                  // integer token ids, one sequence per sample
)

// Input describes a network's input.
type Input struct {
	Kind InputKind
	// Channels, Height, Width of an image (0 for a size the network does
	// not fix: convolutional networks take any size).
	Channels, Height, Width int
	// Vocab is the number of token ids; MaxLen the longest sequence
	// (learned position embeddings), 0 if none.
	Vocab, MaxLen int
	// Classes is the number of outputs per image or token.
	Classes int
	// Causal is true for causal language models (their logits at position
	// t predict token t+1: Evaluate reports perplexity).
	Causal bool
}

// fm is one lane's activation: n*h*w rows (images x positions, or
// sequences x tokens with w = 1) of c features, row-major (NHWC).
type fm struct {
	x       []float32
	n, h, w int
	c       int
}

func (f fm) rows() int { return f.n * f.h * f.w }

// lane is one model running in a pass.
type lane struct {
	net   *Net
	ar    arena
	patch []float32 // im2col scratch, reused by every convolution
	bn    map[string]*bnAcc
}

// pass is one run of a batch through one or more lanes.
type pass struct {
	ctx      context.Context
	lanes    []*lane
	rec      *recorder // nil: nothing recorded
	train    bool      // BatchNorm in training mode (batch statistics, running updates)
	momentum float64   // BatchNorm momentum in training mode (0: cumulative average)
	par      int       // goroutines for the engine's own loops
}

// each runs f for every lane.
func (p *pass) each(f func(i int, l *lane) error) error {
	for i, l := range p.lanes {
		if err := f(i, l); err != nil {
			return err
		}
	}
	return nil
}

// record gives the recorder one activation per lane (rows x dim).
func (p *pass) record(name string, xs []fm) error {
	if p.rec == nil || !p.rec.wants(name) {
		return nil
	}
	vs := make([][]float32, len(xs))
	for i, x := range xs {
		vs[i] = x.x[:x.rows()*x.c]
	}
	return p.rec.add(name, vs, xs[0].rows(), xs[0].c)
}

// recordRaw gives the recorder one row-major rows x dim matrix per lane.
func (p *pass) recordRaw(name string, vs [][]float32, rows, dim int) error {
	if p.rec == nil || !p.rec.wants(name) {
		return nil
	}
	return p.rec.add(name, vs, rows, dim)
}

// wants reports whether a statistic is recorded in this pass.
func (p *pass) wants(name string) bool { return p.rec != nil && p.rec.wants(name) }

func (p *pass) check() error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	return nil
}

// arena hands out float32 buffers for one batch, reusing them (by call
// order) in the next batch.
type arena struct {
	bufs [][]float32
	next int
}

func (a *arena) reset() { a.next = 0 }

// get returns a buffer of n values (contents undefined).
func (a *arena) get(n int) []float32 {
	if a.next < len(a.bufs) && cap(a.bufs[a.next]) >= n {
		b := a.bufs[a.next][:n]
		a.next++
		return b
	}
	b := make([]float32, n)
	if a.next < len(a.bufs) {
		a.bufs[a.next] = b
	} else {
		a.bufs = append(a.bufs, b)
	}
	a.next++
	return b
}

// zeros returns a zeroed buffer.
func (a *arena) zeros(n int) []float32 {
	b := a.get(n)
	clear(b)
	return b
}

// newPass prepares lanes for nets that must share one architecture.
func newPass(ctx context.Context, nets []*Net) (*pass, error) {
	if len(nets) == 0 {
		return nil, fmt.Errorf("no model")
	}
	p := &pass{ctx: ctx, par: 2}
	for i, n := range nets {
		if n == nil || n.fam == nil {
			return nil, fmt.Errorf("model %d is not loaded", i+1)
		}
		if i > 0 {
			if err := sameArch(nets[0], n); err != nil {
				return nil, err
			}
		}
		p.lanes = append(p.lanes, &lane{net: n})
	}
	return p, nil
}

// run runs one batch through every lane.
func (p *pass) run(b *batch) ([]fm, error) {
	for _, l := range p.lanes {
		l.ar.reset()
	}
	return p.lanes[0].net.fam.forward(p, b)
}
