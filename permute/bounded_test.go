package permute

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// writeModel writes weights as a checkpoint in dtype dt (a directory with
// shards of at most shard bytes, or one file when path ends in
// .safetensors).
func writeModel(t *testing.T, path string, w weights, dt tensors.DType, shard int64) *checkpoint.Model {
	return writeModelOpts(t, path, w, dt, checkpoint.WriteOptions{MaxShardSize: shard})
}

// writeModelOpts is writeModel with explicit write options (NaN and Inf
// weights need AllowNonFinite).
func writeModelOpts(t *testing.T, path string, w weights, dt tensors.DType, opts checkpoint.WriteOptions) *checkpoint.Model {
	t.Helper()
	var entries []safetensors.Entry
	for n, x := range w {
		entries = append(entries, safetensors.Entry{Name: n, DType: dt, Shape: x.Shape})
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := w[e.Name].ConvertTo(dt)
		return x, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), path, entries, produce, opts); err != nil {
		t.Fatal(err)
	}
	m, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestMatchModelsCheckpoints: two and three sharded BF16 checkpoints
// matched through MatchModels (read in their dtype, with caches from none
// to everything) give the permutations of the reference, which decodes
// whole models into float32 memory.
func TestMatchModelsCheckpoints(t *testing.T) {
	r := rand.New(rand.NewPCG(101, 102))
	s, base := llamaCase(r)
	dir := t.TempDir()
	var models []*checkpoint.Model
	var mems []MemorySource
	for i := range 3 {
		w, _ := plant(t, r, s, base, 0.3)
		m := writeModel(t, filepath.Join(dir, fmt.Sprint("m", i)), w, tensors.BF16, 6000)
		ms, err := LoadSource(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		models = append(models, m)
		mems = append(mems, ms)
	}
	if len(models[0].Files()) < 3 {
		t.Fatalf("want a sharded checkpoint, got %d files", len(models[0].Files()))
	}
	for _, cache := range []int64{-1, 20_000, 0} {
		opts := MatchOptions{Seed: 3, Restarts: 2, CacheBytes: cache}
		two, err := MatchModels(context.Background(), s, models[:2], opts)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := refWeightMatching(context.Background(), s, mems[0], mems[1], opts)
		samePerms(t, fmt.Sprintf("two models, cache %d", cache), s, two.Perms[1], want.Perms)
		if !two.Perms[0].IsIdentity() || math.Abs(two.DistanceAfter-want.DistanceAfter) > 1e-9*want.DistanceAfter {
			t.Errorf("cache %d: distance %v, reference %v", cache, two.DistanceAfter, want.DistanceAfter)
		}
		three, err := MatchModels(context.Background(), s, models, opts)
		if err != nil {
			t.Fatal(err)
		}
		wantMany, _ := refMergeMany(context.Background(), s, mems, opts)
		for i := range 3 {
			samePerms(t, fmt.Sprintf("three models, cache %d, model %d", cache, i), s, three.Perms[i], wantMany[i])
		}
	}
}

// TestMemoryFlatWhenModelDoubles: the heap used by MergeMany of three
// BF16 checkpoints (and by weight matching of two) does not grow when the
// models have twice the layers. The checkpoints are 4 and 8 MiB of float32
// values each; the whole-model implementation held every model, every
// permuted copy and every mean in float32 (over 30 MiB for the larger
// models), the streaming one holds two cost matrices and a few blocks
// (made small here, as a fraction of the models, so that the test is
// quick; their size does not depend on the model either).
func TestMemoryFlatWhenModelDoubles(t *testing.T) {
	const width = 128
	mk := func(r *rand.Rand, layers int) weights {
		w := weights{}
		for l := range layers {
			name := fmt.Sprintf("layers.%02d.weight", l)
			w[name] = randomTensor(r, name, tensors.F32, 1, width, width)
		}
		return w
	}
	dir := t.TempDir()
	peaks := map[int][2]uint64{}
	for _, layers := range []int{32, 64} {
		r := rand.New(rand.NewPCG(7, uint64(layers)))
		base := mk(r, layers)
		var order []string
		for l := range layers {
			order = append(order, fmt.Sprintf("layers.%02d", l))
		}
		s, err := MLPSpec(base.shapes(), order)
		if err != nil {
			t.Fatal(err)
		}
		var srcs []rawSource
		for i := range 3 {
			w, _ := plant(t, r, s, base, 0.5)
			m := writeModel(t, filepath.Join(dir, fmt.Sprintf("l%d-m%d", layers, i)), w, tensors.BF16, 1<<20)
			srcs = append(srcs, NewCheckpointSource(m, -1))
		}
		small := func() *matcher {
			m := newMatcher(s)
			m.e.block, m.e.pass = 64<<10, 64<<10
			return m
		}
		opts := MatchOptions{Seed: 1, MaxSweeps: 3}
		var err2, err3 error
		two := testenv.PeakHeap(t, func() {
			m := small()
			_, err2 = m.match(context.Background(), side{members: []member{{src: srcs[0]}}}, member{src: srcs[1]}, opts, true)
		})
		three := testenv.PeakHeap(t, func() {
			_, _, err3 = mergeMany(context.Background(), small(), srcs, opts)
		})
		if err2 != nil || err3 != nil {
			t.Fatal(err2, err3)
		}
		peaks[layers] = [2]uint64{two, three}
		t.Logf("%d layers (%d MiB of float32 per model): peak heap %.2f MiB (two models), %.2f MiB (MergeMany of three)",
			layers, layers*width*width*4>>20, float64(two)/(1<<20), float64(three)/(1<<20))
	}
	modelBytes := uint64(32 * width * width * 4) // the smaller model in float32: 2 MiB
	for i, what := range []string{"two models", "MergeMany"} {
		small, big := peaks[32][i], peaks[64][i]
		if big > small+modelBytes/2 {
			t.Errorf("%s: peak heap grew from %d to %d bytes when the model doubled", what, small, big)
		}
		if big > 3*modelBytes {
			t.Errorf("%s: peak heap %d bytes, more than 3x a whole float32 model (%d)", what, big, modelBytes)
		}
	}
}

// TestNonFiniteWeights: NaN or Inf weights are reported with the file and
// the tensor; weights so large that the float32 costs overflow name the
// group and its tensors; the assignment solver's own message (with its API
// hint) never reaches the user.
func TestNonFiniteWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(111, 112))
	s, a := llamaCase(r)
	b, _ := plant(t, r, s, a, 0.1)
	dir := t.TempDir()
	good := writeModel(t, filepath.Join(dir, "good"), a, tensors.BF16, 6000)
	for _, tc := range []struct {
		name  string
		value float32
		dt    tensors.DType
		want  []string
	}{
		{"nan", float32(math.NaN()), tensors.BF16, []string{"model.layers.1.mlp.up_proj.weight", "not finite", "NaN"}},
		{"inf", float32(math.Inf(-1)), tensors.F32, []string{"model.layers.1.mlp.up_proj.weight", "not finite", "-Inf"}},
		{"overflow", 3e38, tensors.F32, []string{"overflows float32", "too large"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := weights{}
			for n, x := range b {
				w[n] = x
			}
			v := w.f("model.layers.1.mlp.up_proj.weight")
			if tc.name == "overflow" {
				for i := range v {
					v[i] = tc.value
				}
			} else {
				v[17] = tc.value
			}
			w["model.layers.1.mlp.up_proj.weight"], _ = tensors.FromFloat32("model.layers.1.mlp.up_proj.weight", tensors.F32, []int64{48, 32}, v)
			bad := writeModelOpts(t, filepath.Join(dir, tc.name), w, tc.dt, checkpoint.WriteOptions{MaxShardSize: 6000, AllowNonFinite: true})
			info, _ := bad.Info("model.layers.1.mlp.up_proj.weight")
			for _, run := range []func() error{
				func() error {
					_, err := MatchModels(context.Background(), s, []*checkpoint.Model{good, bad}, MatchOptions{})
					return err
				},
				func() error {
					_, err := MatchModels(context.Background(), s, []*checkpoint.Model{good, bad, good}, MatchOptions{})
					return err
				},
				func() error { _, err := Align(context.Background(), good, bad, s, AlignOptions{}); return err },
			} {
				err := run()
				if err == nil {
					t.Fatal("accepted")
				}
				msg := err.Error()
				if strings.Contains(msg, "lap:") || strings.Contains(msg, "use -Inf") {
					t.Errorf("internal solver message: %v", err)
				}
				want := tc.want
				if tc.name != "overflow" {
					want = append(want, info.File)
				}
				for _, s := range want {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q does not contain %q", msg, s)
					}
				}
			}
		})
	}
}

// TestMatchingStopsOnCancel: cancelling the context stops weight matching,
// MergeMany and the assignment solves inside them, with the context's
// error.
func TestMatchingStopsOnCancel(t *testing.T) {
	r := rand.New(rand.NewPCG(121, 122))
	// one hidden layer of 1500 units: each sweep solves 1500 x 1500
	// assignments, seconds of work in all
	w := func() weights {
		return weights{
			"fc1.weight": randomTensor(r, "fc1.weight", tensors.F32, 1, 1500, 64),
			"fc2.weight": randomTensor(r, "fc2.weight", tensors.F32, 1, 1500, 1500),
			"fc3.weight": randomTensor(r, "fc3.weight", tensors.F32, 1, 10, 1500),
		}
	}
	a, b, c := w(), w(), w()
	s, _ := MLPSpec(a.shapes(), nil)
	srcs := []Source{tensorSource{a, false}, tensorSource{b, false}, tensorSource{c, false}}
	for _, many := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		var err error
		if many {
			_, err = MergeMany(ctx, s, srcs, MatchOptions{Tol: -1, MaxSweeps: 50})
		} else {
			_, err = WeightMatching(ctx, s, srcs[0], srcs[1], MatchOptions{Tol: -1, MaxSweeps: 50})
		}
		timer.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("MergeMany=%v: got %v, want context.Canceled", many, err)
		}
		t.Logf("MergeMany=%v: returned %v after the start (cancelled at 50ms)", many, time.Since(start))
	}
}

// TestTruncatedCheckpoint: a shard truncated under a running matching
// gives an error naming the shard and the tensor, not a crash.
func TestTruncatedCheckpoint(t *testing.T) {
	r := rand.New(rand.NewPCG(131, 132))
	s, a := llamaCase(r)
	b, _ := plant(t, r, s, a, 0.1)
	dir := t.TempDir()
	ma := writeModel(t, filepath.Join(dir, "a"), a, tensors.BF16, 20000)
	mb := writeModel(t, filepath.Join(dir, "b"), b, tensors.BF16, 20000)
	// (a file's last page reads as zeros beyond its end: the shard must
	// lose whole pages)
	victim := mb.Files()[1]
	if st, err := os.Stat(victim); err != nil || st.Size() < 3*4096 {
		t.Fatalf("shard too small for the test: %v", err)
	}
	if err := os.Truncate(victim, 200); err != nil {
		t.Fatal(err)
	}
	_, err := MatchModels(context.Background(), s, []*checkpoint.Model{ma, mb}, MatchOptions{})
	var fe *safetensors.FaultError
	if !errors.As(err, &fe) || fe.File != victim || fe.Tensor == "" {
		t.Fatalf("got %v, want a fault naming %s and a tensor", err, victim)
	}
}
