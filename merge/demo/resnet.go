package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/merge"
)

// ResNetPair is the demo's convolutional pair: testdata/pairs' ResNets
// (torchvision's ResNet-18 layout at widths 16 to 128, BatchNorm, trained
// on the digits from seeds 1 and 2).
var ResNetPair = Pair{"ResNet-18 layout, digits 0-9, seeds 1 and 2", "resnet-a", "resnet-b"}

// ResNetDir returns the directory holding the ResNet pair for a demo
// directory: DIR/pairs (an extracted demo) or DIR/../pairs (a checkout's
// testdata/demo).
func ResNetDir(dir string) string {
	for _, d := range []string{filepath.Join(dir, "pairs"), filepath.Join(dir, "..", "pairs")} {
		if _, err := os.Stat(filepath.Join(d, ResNetPair.A, "model.safetensors")); err == nil {
			return d
		}
	}
	return filepath.Join(dir, "pairs")
}

// resnetMethod is one row of the ResNet table: a merge plan and whether
// the result's BatchNorm statistics are recomputed on the training split
// (every method but the naive average, as the papers evaluate them; PLeaS
// does it itself).
type resnetMethod struct {
	name  string
	reset bool
	plan  func(models []merge.ModelInput, train string) *merge.Plan
}

func pleasPlan(width float64, extra merge.Params) func([]merge.ModelInput, string) *merge.Plan {
	return func(ms []merge.ModelInput, train string) *merge.Plan {
		p := merge.Params{"calib": merge.Text(train), "width": merge.Num(width)}
		for k, v := range extra {
			p[k] = v
		}
		return &merge.Plan{Method: "pleas", Models: ms, Params: p}
	}
}

var resnetMethods = []resnetMethod{
	{"linear (naive average)", false, func(ms []merge.ModelInput, _ string) *merge.Plan {
		return &merge.Plan{Method: "linear", Models: ms}
	}},
	{"wm (weight matching), BN reset", true, func(ms []merge.ModelInput, _ string) *merge.Plan {
		return &merge.Plan{Method: "wm", Models: ms}
	}},
	{"activation matching, average", false, pleasPlan(1, merge.Params{"refit": merge.Flag(false)})},
	{"pleas width 1.0", false, pleasPlan(1, nil)},
	{"pleas width 1.5", false, pleasPlan(1.5, nil)},
	{"pleas width 2.0", false, pleasPlan(2, nil)},
	{"pleas compute budget 1.5", false, pleasPlan(1, merge.Params{"budget": merge.Num(1.5)})},
}

// RunResNet merges the ResNet pair with the naive average, weight
// matching, activation matching and PLeaS (widths 1, 1.5, 2 and a compute
// budget of 1.5 times one model), everything in Go: the joint statistics
// and the BatchNorm statistics come from wtool's engine (fisher/nn) on the
// digits' training split, no Python. Width is the merged model's last
// stage's channels.
func RunResNet(ctx context.Context, o Options) ([]Row, error) {
	work := o.Work
	if work == "" {
		w, err := os.MkdirTemp("", "wtool-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(w)
		work = w
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(work, "data")
		if err := Extract(o.Dir); err != nil {
			return nil, fmt.Errorf("extracting the embedded demo: %w", err)
		}
	}
	say := func(format string, args ...any) {
		if o.Progress != nil {
			o.Progress(fmt.Sprintf(format, args...))
		}
	}
	pairs := ResNetDir(o.Dir)
	train := filepath.Join(o.Dir, "digits_train.safetensors")
	test, err := nn.OpenData(filepath.Join(o.Dir, "digits_test.safetensors"), "", "")
	if err != nil {
		return nil, fmt.Errorf("the demo needs %s: %w", o.Dir, err)
	}
	defer test.Close()
	trainData, err := nn.OpenData(train, "", "-")
	if err != nil {
		return nil, err
	}
	defer trainData.Close()
	eval := func(path string, reset bool) (nn.Result, int, error) {
		net, err := nn.LoadPath(path)
		if err != nil {
			return nn.Result{}, 0, err
		}
		if reset {
			if _, err := nn.RecomputeBatchNorm(ctx, net, trainData, nn.BNOptions{}); err != nil {
				return nn.Result{}, 0, err
			}
		}
		r, err := nn.Evaluate(ctx, net, test, nn.EvalOptions{})
		width := 0
		if w, ok := net.Arch.Module("fc"); ok {
			width = w.InFeatures
		}
		return r, width, err
	}
	p := ResNetPair
	var rows []Row
	for _, src := range []string{p.A, p.B} {
		r, w, err := eval(filepath.Join(pairs, src), false)
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{Pair: p.Name, Method: "source " + src, Accuracy: r.Accuracy, Loss: r.Loss, Hidden: w})
	}
	ms := []merge.ModelInput{{Path: filepath.Join(pairs, p.A)}, {Path: filepath.Join(pairs, p.B)}}
	for mi, m := range resnetMethods {
		say("%s: %s", p.Name, m.name)
		out := filepath.Join(work, fmt.Sprintf("resnet-method%d", mi))
		start := time.Now()
		if _, err := merge.Execute(ctx, m.plan(ms, train), out, checkpoint.WriteOptions{Force: true}); err != nil {
			return nil, fmt.Errorf("%s, %s: %w", p.Name, m.name, err)
		}
		r, w, err := eval(out, m.reset)
		if err != nil {
			return nil, err
		}
		rows = append(rows, Row{Pair: p.Name, Method: m.name, Accuracy: r.Accuracy, Loss: r.Loss, Seconds: time.Since(start).Seconds(), Hidden: w})
	}
	return rows, nil
}
