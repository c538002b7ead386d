package permute

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wtool/wtool/fisher/nn"
	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

var familiesGen = testenv.Generated{Prefix: "wtool-permute-families-"}

func TestMain(m *testing.M) { os.Exit(familiesGen.Run(m)) }

// torchCheckpoints writes every family's tiny checkpoint
// (testdata/families/families.py) once per test binary and returns the
// directory (DIR/FAMILY).
func torchCheckpoints(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	return familiesGen.Dir(t, func(dir string) error {
		return testenv.RunScript(py, "../testdata/families/families.py", append([]string{dir}, torchFamilies...)...)
	})
}

// calibration returns random inputs the network reads: n images, or n
// sequences of 8 tokens.
func calibration(t *testing.T, net *nn.Net, n int, seed uint64) *nn.Data {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 5))
	in := net.Input()
	var d *nn.Data
	var err error
	if in.Kind == nn.Images {
		c, h, w := in.Channels, max(in.Height, 16), max(in.Width, 16)
		x := make([]float32, n*c*h*w)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		d, err = nn.NewImages(x, n, []int{c, h, w}, nil)
	} else {
		ids := make([]int32, n*8)
		for i := range ids {
			ids[i] = int32(rng.IntN(in.Vocab))
		}
		d, err = nn.NewTokens(ids, n, 8)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestActivationMatchingEveryFamily: on every family's tiny checkpoint and
// a copy with a random permutation of every group planted, activation
// matching from joint statistics that fisher/nn computes on random inputs
// (and the weights, for query/key features, which no entry records) finds
// the planted permutation back exactly;
// every group pools entries of its space (a residual stream: all of its
// activation points), and the spaces the engine names for its points are
// the ones StatsEntries finds.
func TestActivationMatchingEveryFamily(t *testing.T) {
	dir := torchCheckpoints(t)
	ctx := context.Background()
	for i, f := range torchFamilies {
		t.Run(f, func(t *testing.T) {
			m, err := checkpoint.Open(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			a, err := arch.Open(m)
			if err != nil {
				t.Fatal(err)
			}
			as, err := BuildSpec(a)
			if err != nil {
				t.Fatal(err)
			}
			s := as.Spec
			if s.Architecture() != as {
				t.Fatal("the spec does not lead back to its architecture")
			}
			if bs, err := BuiltinSpec("auto", m, nil); err != nil || bs.Architecture() == nil || !slices.Equal(bs.GroupNames(), s.GroupNames()) {
				t.Fatalf("BuiltinSpec auto: %v", err)
			}
			rng := rand.New(rand.NewPCG(uint64(i), 13))
			p := RandomPerms(rng, s)
			permPath := filepath.Join(t.TempDir(), f+"-perm")
			if _, err := ApplyCheckpoint(ctx, m, s, p, permPath, checkpoint.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			na, err := nn.Load(m)
			if err != nil {
				t.Fatal(err)
			}
			nb, err := nn.LoadPath(permPath)
			if err != nil {
				t.Fatal(err)
			}
			d := calibration(t, na, 48, uint64(i))
			st, err := nn.CollectStats(ctx, []*nn.Net{na, nb}, d, nn.StatsOptions{})
			if err != nil {
				t.Fatal(err)
			}
			js := StatsOf(st)
			// the engine's spaces for its entries are StatsEntries'
			entries := s.StatsEntries(js)
			found := map[string]string{}
			for _, es := range entries {
				for _, e := range es {
					found[e.Name] = e.Space
				}
			}
			for _, pt := range na.Points() {
				if sp, ok := found[pt.Name]; ok && sp != pt.Space {
					t.Errorf("entry %s: space %s, the engine says %s", pt.Name, sp, pt.Space)
				}
				if ax, ok := as.spaceAxis[pt.Space]; ok && ax.Segments == nil && found[pt.Name] == "" {
					t.Errorf("entry %s of space %s (group %s) not found", pt.Name, pt.Space, ax.Group)
				}
			}
			for _, g := range as.GroupsOfKind(KindResidual) {
				acts := 0
				for _, e := range entries[g] {
					if nn.IsActivation(e.Name) {
						acts++
					}
				}
				if acts < 2 && a.Family != "resnet" {
					t.Errorf("residual group %s pools %d activation points", g, acts)
				}
			}
			// without the weights, query/key features move with their heads
			noW, _, err := MatchActivations(ctx, s, js, ActivationOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, qk := range as.GroupsOfKind(KindQK) {
				w := s.Within[qk]
				for h, src := range noW[w.Heads] {
					for f := range w.Dim {
						if noW[qk][h*w.Dim+f] != src*w.Dim+f {
							t.Fatalf("group %s without weights: head %d feature %d from %d, its head from %d", qk, h, f, noW[qk][h*w.Dim+f], src)
						}
					}
				}
			}
			pm, err := checkpoint.Open(permPath)
			if err != nil {
				t.Fatal(err)
			}
			defer pm.Close()
			weights := [2]Source{NewCheckpointSource(m, 0), NewCheckpointSource(pm, 0)}
			got, rep, err := MatchActivations(ctx, s, js, ActivationOptions{Scores: true, Weights: weights})
			if err != nil {
				t.Fatal(err)
			}
			// units whose features are constant on the data (a ReLU channel
			// of a random ResNet that is never positive) correlate with
			// nothing: any match is as good; every other unit must be found
			want := p.Inverse()
			scores := map[string][]float64{}
			for _, r := range rep {
				scores[r.Group] = r.Scores
				n := s.Groups[r.Group]
				if len(r.Scores) != n*n {
					t.Errorf("group %s: %d scores for %d units", r.Group, len(r.Scores), n)
				}
			}
			dead := 0
			for _, g := range s.GroupNames() {
				sc, n := scores[g], s.Groups[g]
				if sc == nil { // a feature group no statistics see: moves with its heads
					if !slices.Equal(got[g], want[g]) {
						t.Errorf("group %s: found %v, planted %v", g, got[g], want[g])
					}
					continue
				}
				for i := range n {
					if sc[i*n+want[g][i]] < 0.99 {
						dead++
						continue
					}
					if got[g][i] != want[g][i] {
						t.Errorf("group %s: unit %d matched to %d (score %.4f), planted %d (score %.4f)", g, i, got[g][i], sc[i*n+got[g][i]], want[g][i], sc[i*n+want[g][i]])
					}
				}
			}
			if a.Family != "resnet" && dead > 0 {
				t.Errorf("%d units with constant features", dead)
			}
			t.Logf("%d groups, %d entries pooled, %d units constant on the data", len(rep), len(found), dead)
		})
	}
}
