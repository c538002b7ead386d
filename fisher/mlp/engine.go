package mlp

import (
	"fmt"
	_ "github.com/wtool/wtool/tensors/linalg" // fast GEMM kernels for gonum
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Workspace holds the activations of one batch, reused across batches.
type Workspace struct {
	batch int
	// Inputs[l] is layer l's input (batch x In), Inputs[0] the batch itself;
	// Pre[l] is its pre-activation output W x + b (batch x Out).
	Inputs [][]float32
	Pre    [][]float32
	grad   [][]float32 // gradient with respect to Pre[l]
	dIn    []float32
}

func (ws *Workspace) ensure(n *Network, batch int) {
	if ws.batch >= batch && len(ws.Pre) == len(n.Layers) {
		ws.batch = batch
		ws.trim(n, batch)
		return
	}
	ws.batch = batch
	ws.Inputs = make([][]float32, len(n.Layers))
	ws.Pre = make([][]float32, len(n.Layers))
	ws.grad = make([][]float32, len(n.Layers))
	maxIn := 0
	for l, layer := range n.Layers {
		ws.Pre[l] = make([]float32, batch*layer.Out)
		ws.grad[l] = make([]float32, batch*layer.Out)
		if l > 0 {
			ws.Inputs[l] = make([]float32, batch*layer.In)
		}
		maxIn = max(maxIn, layer.In)
	}
	ws.dIn = make([]float32, batch*maxIn)
}

// trim reslices the buffers for a smaller batch.
func (ws *Workspace) trim(n *Network, batch int) {
	for l, layer := range n.Layers {
		ws.Pre[l] = ws.Pre[l][:batch*layer.Out]
		ws.grad[l] = ws.grad[l][:batch*layer.Out]
		if l > 0 {
			ws.Inputs[l] = ws.Inputs[l][:batch*layer.In]
		}
	}
}

func matrix(data []float32, rows, cols int) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data}
}

// Forward runs a batch of rows x Inputs() values (row-major) through the
// network and returns the logits (rows x Classes()), a slice of ws valid until
// the next call. ws.Inputs holds every layer's input afterwards.
func (n *Network) Forward(ws *Workspace, x []float32, rows int) []float32 {
	ws.ensure(n, rows)
	ws.Inputs[0] = x[:rows*n.Inputs()]
	for l, layer := range n.Layers {
		in, pre := ws.Inputs[l], ws.Pre[l]
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, matrix(in, rows, layer.In), matrix(layer.W, layer.Out, layer.In), 0, matrix(pre, rows, layer.Out))
		if layer.B != nil {
			for r := range rows {
				row := pre[r*layer.Out : (r+1)*layer.Out]
				for j, b := range layer.B {
					row[j] += b
				}
			}
		}
		if l+1 < len(n.Layers) {
			n.Act.apply(ws.Inputs[l+1], pre)
		}
	}
	return ws.Pre[len(n.Layers)-1]
}

// Gradients holds the gradient of the loss with respect to every weight and
// bias, in the layout of the network's parameters.
type Gradients struct {
	W [][]float32
	B [][]float32
}

// NewGradients allocates gradients for n.
func NewGradients(n *Network) *Gradients {
	g := &Gradients{W: make([][]float32, len(n.Layers)), B: make([][]float32, len(n.Layers))}
	for l, layer := range n.Layers {
		g.W[l] = make([]float32, layer.Out*layer.In)
		if layer.B != nil {
			g.B[l] = make([]float32, layer.Out)
		}
	}
	return g
}

// LossAndGradients runs the batch forward, computes the mean softmax
// cross-entropy against labels (each in [0, Classes())) and, when g is not
// nil, its gradient with respect to every parameter by backpropagation.
func (n *Network) LossAndGradients(ws *Workspace, x []float32, labels []int, g *Gradients) (float64, error) {
	rows := len(labels)
	classes := n.Classes()
	for i, y := range labels {
		if y < 0 || y >= classes {
			return 0, fmt.Errorf("label %d at sample %d is out of range for %d classes", y, i, classes)
		}
	}
	logits := n.Forward(ws, x, rows)
	last := len(n.Layers) - 1
	dz := ws.grad[last]
	var loss float64
	for r := range rows {
		z := logits[r*classes : (r+1)*classes]
		m := float64(z[0])
		for _, v := range z {
			m = max(m, float64(v))
		}
		var s float64
		for _, v := range z {
			s += math.Exp(float64(v) - m)
		}
		lse := m + math.Log(s)
		loss += lse - float64(z[labels[r]])
		// (softmax - onehot) / rows, formed in float64: 1 - p for the true
		// class loses most of its digits if the subtraction is done in float32
		d := dz[r*classes : (r+1)*classes]
		for j, v := range z {
			g := math.Exp(float64(v) - lse)
			if j == labels[r] {
				g--
			}
			d[j] = float32(g / float64(rows))
		}
	}
	loss /= float64(rows)
	if g == nil {
		return loss, nil
	}
	for l := last; l >= 0; l-- {
		layer := n.Layers[l]
		d := ws.grad[l]
		// dW = dZ^T X, db = column sums of dZ
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, matrix(d, rows, layer.Out), matrix(ws.Inputs[l], rows, layer.In), 0, matrix(g.W[l], layer.Out, layer.In))
		if layer.B != nil {
			db := g.B[l]
			clear(db)
			for r := range rows {
				for j, v := range d[r*layer.Out : (r+1)*layer.Out] {
					db[j] += v
				}
			}
		}
		if l == 0 {
			break
		}
		// dX = dZ W, then through the activation of the layer below
		dx := ws.dIn[:rows*layer.In]
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, matrix(d, rows, layer.Out), matrix(layer.W, layer.Out, layer.In), 0, matrix(dx, rows, layer.In))
		n.Act.backprop(dx, ws.Pre[l-1])
		copy(ws.grad[l-1], dx)
	}
	return loss, nil
}
