package lowrank

import (
	"context"
	"fmt"
	"image/color"
	"math"
	"regexp"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// Spectrum is the singular value spectrum of one weight matrix.
type Spectrum struct {
	Name   string    `json:"name"`
	Shape  []int64   `json:"shape"`
	Values []float64 `json:"singular_values"`
	// Energy[k] is the fraction of the squared Frobenius norm held by the
	// first k+1 singular values.
	Energy []float64 `json:"cumulative_energy"`
	// Exact is false when only the top Values were computed (randomized).
	Exact bool `json:"exact"`
}

// RankFor returns the smallest rank keeping the energy fraction e, or 0 if
// the computed values do not reach it.
func (s *Spectrum) RankFor(e float64) int {
	for k, v := range s.Energy {
		if v >= e*(1-1e-12) {
			return k + 1
		}
	}
	return 0
}

// Spectra computes the singular values of the matching weights of m (the
// architecture's default targets without patterns; every matrix in its
// module's orientation, conv kernels as [out, in*kh*kw]), all of them exactly, or with top >
// 0 only the largest top by randomized SVD (the energy fractions stay exact:
// the total is the squared Frobenius norm).
func Spectra(ctx context.Context, m *checkpoint.Model, targets []*regexp.Regexp, top int, o SVDOptions) ([]Spectrum, error) {
	return SpectraOf(ctx, m, nil, targets, top, o)
}

// SpectraOf is Spectra with the model's architecture already described (nil:
// described here).
func SpectraOf(ctx context.Context, m *checkpoint.Model, a *arch.Arch, targets []*regexp.Regexp, top int, o SVDOptions) ([]Spectrum, error) {
	a, err := openArch(m, a)
	if err != nil {
		return nil, err
	}
	ts, err := findTargets(m, a, targetSelection{patterns: targets, rule: RankRule{Rank: 1}, what: "analyse"})
	if err != nil {
		return nil, err
	}
	var out []Spectrum
	for _, t := range ts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		w, err := readMatrix(m, t) // [out, in]
		if err != nil {
			return nil, err
		}
		var total float64
		for _, v := range w {
			total += float64(v) * float64(v)
		}
		sp := Spectrum{Name: t.name, Shape: t.shape, Exact: top <= 0 || top >= min(t.m, t.n)}
		if sp.Exact {
			sp.Values, err = SingularValues(w, t.m, t.n)
		} else {
			o.Rank = top
			var f *Factors
			f, err = TruncatedSVD(w, t.m, t.n, o)
			if f != nil {
				sp.Values = f.S
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", m.Path, t.name, err)
		}
		var c float64
		for _, v := range sp.Values {
			c += v * v
			e := 1.0
			if total > 0 {
				e = math.Min(1, c/total)
			}
			sp.Energy = append(sp.Energy, e)
		}
		out = append(out, sp)
	}
	return out, nil
}

// PlotSpectra draws the normalised singular values (log scale) and the
// cumulative energy of each spectrum, side by side, into a PNG file.
func PlotSpectra(path string, spectra []Spectrum) error {
	left, right := plot.New(), plot.New()
	left.Title.Text = "singular values / largest"
	left.X.Label.Text = "index"
	left.Y.Scale = plot.LogScale{}
	left.Y.Tick.Marker = plot.LogTicks{}
	right.Title.Text = "cumulative energy"
	right.X.Label.Text = "rank"
	right.Y.Min, right.Y.Max = 0, 1
	shown := spectra
	if len(shown) > 12 {
		shown = shown[:12]
	}
	for i, s := range shown {
		col := palette(i, len(shown))
		var sv, en plotter.XYs
		for k, v := range s.Values {
			if v <= 0 || s.Values[0] <= 0 {
				continue
			}
			sv = append(sv, plotter.XY{X: float64(k + 1), Y: v / s.Values[0]})
			en = append(en, plotter.XY{X: float64(k + 1), Y: s.Energy[k]})
		}
		if len(sv) == 0 {
			continue
		}
		l1, err := plotter.NewLine(sv)
		if err != nil {
			return err
		}
		l2, err := plotter.NewLine(en)
		if err != nil {
			return err
		}
		l1.Color, l2.Color = col, col
		right.Add(l2)
		left.Add(l1)
		right.Legend.Add(strings.TrimSuffix(s.Name, ".weight"), l2)
	}
	right.Legend.Top = false
	left.Add(plotter.NewGrid())
	right.Add(plotter.NewGrid())
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4}
	for i, p := range []*plot.Plot{left, right} {
		p.Draw(tiles.At(dc, i, 0))
	}
	return savePNG(path, img)
}

func palette(i, n int) color.Color {
	h := float64(i) / float64(max(n, 1))
	r := 0.5 + 0.5*math.Cos(2*math.Pi*h)
	g := 0.5 + 0.5*math.Cos(2*math.Pi*(h-1.0/3))
	b := 0.5 + 0.5*math.Cos(2*math.Pi*(h-2.0/3))
	return color.RGBA{R: uint8(200 * r), G: uint8(200 * g), B: uint8(200 * b), A: 255}
}
