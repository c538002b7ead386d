package demo

import (
	"bytes"
	"context"
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/permute"
)

// Point is the test accuracy of (1-t) A + t B.
type Point struct{ T, Accuracy float64 }

// Curves returns the test accuracy along the straight path from model A to
// model B, naive and with B first aligned to A by weight matching, at steps+1
// evenly spaced points.
func Curves(ctx context.Context, dir string, p Pair, steps int) (naive, aligned []Point, err error) {
	ma, err := checkpoint.Open(filepath.Join(dir, p.A))
	if err != nil {
		return nil, nil, err
	}
	defer ma.Close()
	mb, err := checkpoint.Open(filepath.Join(dir, p.B))
	if err != nil {
		return nil, nil, err
	}
	defer mb.Close()
	spec, err := permute.MLPSpec(permute.Shapes(ma), nil)
	if err != nil {
		return nil, nil, err
	}
	sa, err := permute.LoadSource(ma, nil)
	if err != nil {
		return nil, nil, err
	}
	sb, err := permute.LoadSource(mb, nil)
	if err != nil {
		return nil, nil, err
	}
	res, err := permute.WeightMatching(ctx, spec, sa, sb, permute.MatchOptions{Restarts: 3})
	if err != nil {
		return nil, nil, err
	}
	na, err := mlp.Load(ma, nil, mlp.ReLU)
	if err != nil {
		return nil, nil, err
	}
	nb, err := mlp.Load(mb, nil, mlp.ReLU)
	if err != nil {
		return nil, nil, err
	}
	nbAligned, err := permutedNetwork(spec, mb, res.Perms)
	if err != nil {
		return nil, nil, err
	}
	test := filepath.Join(dir, "digits_test.safetensors")
	in, err := mlp.OpenInputs(test, "")
	if err != nil {
		return nil, nil, err
	}
	defer in.Close()
	labels, err := mlp.ReadLabels(test, "")
	if err != nil {
		return nil, nil, err
	}
	for i := 0; i <= steps; i++ {
		t := float64(i) / float64(steps)
		for _, c := range []struct {
			b   *mlp.Network
			out *[]Point
		}{{nb, &naive}, {nbAligned, &aligned}} {
			acc, _, err := mlp.Evaluate(ctx, lerp(na, c.b, t), in, labels, 512)
			if err != nil {
				return nil, nil, err
			}
			*c.out = append(*c.out, Point{T: t, Accuracy: acc})
		}
	}
	return naive, aligned, nil
}

func permutedNetwork(spec *permute.Spec, m *checkpoint.Model, p permute.Perms) (*mlp.Network, error) {
	n, err := mlp.Load(m, nil, mlp.ReLU)
	if err != nil {
		return nil, err
	}
	for l := range n.Layers {
		layer := &n.Layers[l]
		for _, suffix := range []string{".weight", ".bias"} {
			if !m.Has(layer.Name + suffix) {
				continue
			}
			t, err := m.Tensor(layer.Name + suffix)
			if err != nil {
				return nil, err
			}
			pt, err := spec.Apply(t, p)
			if err != nil {
				return nil, err
			}
			v, err := pt.Float32()
			if err != nil {
				return nil, err
			}
			if suffix == ".weight" {
				layer.W = v
			} else {
				layer.B = v
			}
		}
	}
	return n, nil
}

func lerp(a, b *mlp.Network, t float64) *mlp.Network {
	out := &mlp.Network{Act: a.Act}
	mix := func(x, y []float32) []float32 {
		if x == nil {
			return nil
		}
		z := make([]float32, len(x))
		for i := range x {
			z[i] = float32((1-t)*float64(x[i]) + t*float64(y[i]))
		}
		return z
	}
	for l := range a.Layers {
		la, lb := a.Layers[l], b.Layers[l]
		out.Layers = append(out.Layers, mlp.Layer{Name: la.Name, Out: la.Out, In: la.In, W: mix(la.W, lb.W), B: mix(la.B, lb.B)})
	}
	return out
}

// Plot draws accuracy along the interpolation paths into a PNG file.
func Plot(path, title string, naive, aligned []Point) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "t  (model = (1 - t) A + t B)"
	p.Y.Label.Text = "test accuracy"
	p.Y.Min, p.Y.Max = 0, 1
	xy := func(ps []Point) plotter.XYs {
		out := make(plotter.XYs, len(ps))
		for i, q := range ps {
			out[i].X, out[i].Y = q.T, q.Accuracy
		}
		return out
	}
	for _, c := range []struct {
		name string
		pts  []Point
		col  color.Color
	}{{"naive averaging", naive, color.RGBA{R: 200, A: 255}}, {"weight-matched averaging", aligned, color.RGBA{B: 200, G: 80, A: 255}}} {
		l, s, err := plotter.NewLinePoints(xy(c.pts))
		if err != nil {
			return err
		}
		l.Color, s.Color = c.col, c.col
		p.Add(l, s)
		p.Legend.Add(c.name, l, s)
	}
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	w, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	var b bytes.Buffer
	if _, err := w.WriteTo(&b); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return fsafe.WriteFile(path, b.Bytes(), true) // atomically
}
