// Package demo runs wtool's bundled merging demonstration: small MLP
// classifiers trained on scikit-learn's digits (testdata/demo, with the
// script that trained them) merged with every method, each result evaluated
// on the held-out test split. It shows what permutation-aware merging buys:
// averaging two networks trained from different seeds collapses, aligning
// their hidden units first (weight matching) recovers most of the accuracy,
// and PLeaS's least-squares refit matches or beats the source models.
package demo

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wtool/wtool"
	"github.com/wtool/wtool/fisher"
	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/merge"
)

// Pair is two demo models to merge.
type Pair struct {
	Name string
	A, B string // model directories under the demo directory
}

// Pairs are the demo's model pairs.
var Pairs = []Pair{
	{"digits 0-9, seeds 1 and 2", "mlp-a", "mlp-b"},
	{"digits 0-4 vs 5-9 (different label sets)", "mlp-c", "mlp-d"},
}

// Row is one line of the result table.
type Row struct {
	Pair     string
	Method   string
	Accuracy float64 // on the test split
	Loss     float64 // mean cross-entropy on the test split
	Seconds  float64 // merge time, including any pass over the data it needs
	Hidden   int     // hidden width of the result
}

// Options control Run.
type Options struct {
	// Dir is the demo directory (a checkout's testdata/demo); "" uses the
	// copy embedded in the binary (Extract).
	Dir      string
	Work     string // where merged models are written ("" = a temporary directory, removed)
	Progress func(msg string)
}

// Extract writes the demo's models and data embedded in the binary (the
// module's testdata/demo) into the directory dst, in the layout Run and
// Curves read.
// The ResNet pair goes to dst/pairs (see ResNetDir).
func Extract(dst string) error {
	if err := extract(demoRoot, dst); err != nil {
		return err
	}
	return extract(pairsRoot, filepath.Join(dst, "pairs"))
}

func extract(root, dst string) error {
	return fs.WalkDir(wtool.Demo, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := wtool.Demo.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

const (
	demoRoot  = "testdata/demo"
	pairsRoot = "testdata/pairs"
)

type method struct {
	name string
	plan func(dir string, p Pair, fishers []string) *merge.Plan
}

func models(dir string, p Pair) []merge.ModelInput {
	return []merge.ModelInput{{Path: filepath.Join(dir, p.A)}, {Path: filepath.Join(dir, p.B)}}
}

var methods = []method{
	{"linear (naive average)", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "linear", Models: models(d, p)}
	}},
	{"slerp t=0.5", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "slerp", Models: models(d, p), Params: merge.Params{"t": merge.Num(0.5)}}
	}},
	{"fisher", func(d string, p Pair, f []string) *merge.Plan {
		ms := models(d, p)
		ms[0].Params = merge.Params{"fisher": merge.Text(f[0])}
		ms[1].Params = merge.Params{"fisher": merge.Text(f[1])}
		return &merge.Plan{Method: "fisher", Models: ms}
	}},
	{"regmean", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "regmean", Models: models(d, p), Params: merge.Params{"calib": merge.Text(filepath.Join(d, "digits_train.safetensors"))}}
	}},
	{"wm (weight matching)", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "wm", Models: models(d, p)}
	}},
	{"pleas width 1.0", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "pleas", Models: models(d, p), Params: merge.Params{"calib": merge.Text(filepath.Join(d, "digits_train.safetensors")), "width": merge.Num(1)}}
	}},
	{"pleas width 1.5", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "pleas", Models: models(d, p), Params: merge.Params{"calib": merge.Text(filepath.Join(d, "digits_train.safetensors")), "width": merge.Num(1.5)}}
	}},
	{"pleas width 2.0", func(d string, p Pair, _ []string) *merge.Plan {
		return &merge.Plan{Method: "pleas", Models: models(d, p), Params: merge.Params{"calib": merge.Text(filepath.Join(d, "digits_train.safetensors")), "width": merge.Num(2)}}
	}},
}

// Run merges every demo pair with every method and evaluates the results.
func Run(ctx context.Context, o Options) ([]Row, error) {
	work := o.Work
	if work == "" {
		w, err := os.MkdirTemp("", "wtool-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(w)
		work = w
	}
	say := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(format, args...))
		}
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(work, "data")
		if err := Extract(o.Dir); err != nil {
			return nil, fmt.Errorf("extracting the embedded demo: %w", err)
		}
	}
	test := filepath.Join(o.Dir, "digits_test.safetensors")
	train := filepath.Join(o.Dir, "digits_train.safetensors")
	in, err := mlp.OpenInputs(test, "")
	if err != nil {
		return nil, fmt.Errorf("the demo needs %s: %w", o.Dir, err)
	}
	defer in.Close()
	labels, err := mlp.ReadLabels(test, "")
	if err != nil {
		return nil, err
	}
	eval := func(path string) (float64, float64, int, error) {
		m, err := checkpoint.Open(path)
		if err != nil {
			return 0, 0, 0, err
		}
		defer m.Close()
		n, err := mlp.Load(m, nil, mlp.ReLU)
		if err != nil {
			return 0, 0, 0, err
		}
		acc, loss, err := mlp.Evaluate(ctx, n, in, labels, 512)
		return acc, loss, n.Layers[0].Out, err
	}
	var rows []Row
	for pi, p := range Pairs {
		for _, src := range []string{p.A, p.B} {
			acc, loss, w, err := eval(filepath.Join(o.Dir, src))
			if err != nil {
				return nil, err
			}
			rows = append(rows, Row{Pair: p.Name, Method: "source " + src, Accuracy: acc, Loss: loss, Hidden: w})
		}
		// Fisher information of each source on the training split
		start := time.Now()
		var fishers []string
		for _, src := range []string{p.A, p.B} {
			say("Fisher information of %s", src)
			path := filepath.Join(work, fmt.Sprintf("fisher-%s.safetensors", src))
			if err := fisherFile(ctx, filepath.Join(o.Dir, src), train, path); err != nil {
				return nil, err
			}
			fishers = append(fishers, path)
		}
		fisherTime := time.Since(start).Seconds()
		for mi, m := range methods {
			say("%s: %s", p.Name, m.name)
			out := filepath.Join(work, fmt.Sprintf("pair%d-method%d", pi, mi))
			plan := m.plan(o.Dir, p, fishers)
			start := time.Now()
			if _, err := merge.Execute(ctx, plan, out, checkpoint.WriteOptions{Force: true}); err != nil {
				return nil, fmt.Errorf("%s, %s: %w", p.Name, m.name, err)
			}
			secs := time.Since(start).Seconds()
			if plan.Method == "fisher" {
				secs += fisherTime
			}
			acc, loss, w, err := eval(out)
			if err != nil {
				return nil, err
			}
			rows = append(rows, Row{Pair: p.Name, Method: m.name, Accuracy: acc, Loss: loss, Seconds: secs, Hidden: w})
		}
	}
	return rows, nil
}

func fisherFile(ctx context.Context, model, data, out string) error {
	m, err := checkpoint.Open(model)
	if err != nil {
		return err
	}
	defer m.Close()
	n, err := mlp.Load(m, nil, mlp.ReLU)
	if err != nil {
		return err
	}
	in, err := mlp.OpenInputs(data, "")
	if err != nil {
		return err
	}
	defer in.Close()
	labels, err := mlp.ReadLabels(data, "")
	if err != nil {
		return err
	}
	ts, meta, err := mlp.CollectFisher(ctx, n, in, labels, mlp.Options{BatchSize: 32})
	if err != nil {
		return err
	}
	return fisher.Write(ctx, out, ts, meta, checkpoint.WriteOptions{Force: true})
}

// Print writes the table.
func Print(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	last := ""
	for _, r := range rows {
		if r.Pair != last {
			if last != "" {
				fmt.Fprintln(tw)
			}
			fmt.Fprintf(tw, "%s\tACCURACY\tLOSS\tWIDTH\tTIME\n", r.Pair)
			last = r.Pair
		}
		t := "-"
		if r.Seconds > 0 {
			t = fmt.Sprintf("%.2f s", r.Seconds)
		}
		fmt.Fprintf(tw, "  %s\t%.1f%%\t%.3f\t%d\t%s\n", r.Method, 100*r.Accuracy, r.Loss, r.Hidden, t)
	}
	tw.Flush()
}
