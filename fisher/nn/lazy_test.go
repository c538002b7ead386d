package nn

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wtool/wtool/fisher/stats"
)

// TestLazyStatsAreCollectStats: statistics accumulated on demand from the
// kept rows are CollectStats's bit for bit, whichever order the entries
// are read in and however often (a deferred entry reuses the arrays of the
// one before), and whether an entry's rows were kept or outgrew its
// statistics and were accumulated as they came.
func TestLazyStatsAreCollectStats(t *testing.T) {
	a := loadNet(t, filepath.Join(pairsDir, "resnet-a"))
	b := loadNet(t, filepath.Join(pairsDir, "resnet-b"))
	d := openTestData(t, "../../testdata/demo/digits_train.safetensors")
	// batches of 48 images: the deep entries (1x1 positions) buffer their
	// rows across batches, the shallow ones send whole blocks
	opts := StatsOptions{BatchSize: 48, Limit: 300}
	for _, tc := range []struct {
		name       string
		nets       []*Net
		deferBytes int64
		deferred   bool // some entries accumulated on demand
	}{
		{"joint, every entry deferred", []*Net{a, b}, 1, true},
		{"joint, entries above 1 MiB deferred", []*Net{a, b}, 1 << 20, true},
		{"joint, default threshold (nothing that large)", []*Net{a, b}, 0, false},
		{"joint, none deferred", []*Net{a, b}, -1, false},
		{"single model, every entry deferred", []*Net{a}, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			want, err := CollectStats(ctx, tc.nets, d, opts)
			if err != nil {
				t.Fatal(err)
			}
			got, err := CollectLazyStats(ctx, tc.nets, d, opts, tc.deferBytes)
			if err != nil {
				t.Fatal(err)
			}
			names := got.Names()
			if len(names) != len(want.Modules) {
				t.Fatalf("%d entries, CollectStats has %d", len(names), len(want.Modules))
			}
			def := got.Deferred()
			if (len(def) > 0) != tc.deferred {
				t.Fatalf("deferred entries %v", def)
			}
			if tc.deferBytes == 1 && len(def) == len(names) {
				t.Errorf("every entry kept its rows: the shallow convolutions' rows outweigh their statistics and should have been accumulated")
			}
			if got.Samples() != want.Samples {
				t.Errorf("samples %d, want %d", got.Samples(), want.Samples)
			}
			// forward, then backward: every deferred entry accumulated
			// again into another one's arrays
			order := slices.Clone(names)
			for pass := range 2 {
				for _, n := range order {
					w := want.Module(n)
					c, err := got.Count(n)
					if err != nil || c != w.Count {
						t.Fatalf("%s: count %d (%v), want %d", n, c, err, w.Count)
					}
					m, err := got.Module(n)
					if err != nil {
						t.Fatal(err)
					}
					sameModule(t, pass, m, w)
				}
				slices.Reverse(order)
			}
			n := names[len(names)/2]
			got.Release(n)
			if got.Has(n) {
				t.Errorf("%s: still there after Release", n)
			}
			if _, err := got.Module(n); err == nil {
				t.Errorf("%s: read after Release", n)
			}
			if !got.Has(names[0]) {
				t.Errorf("%s: released with %s", names[0], n)
			}
		})
	}
}

func sameModule(t *testing.T, pass int, got, want *stats.Module) {
	t.Helper()
	if got.Name != want.Name || got.Dim != want.Dim || got.Count != want.Count {
		t.Fatalf("pass %d: %s dim %d count %d, want %s %d %d", pass, got.Name, got.Dim, got.Count, want.Name, want.Dim, want.Count)
	}
	for _, f := range []struct {
		name      string
		got, want []float64
	}{
		{"Sum", got.Sum, want.Sum}, {"Abs", got.Abs, want.Abs}, {"Gram", got.Gram, want.Gram},
		{"SumB", got.SumB, want.SumB}, {"AbsB", got.AbsB, want.AbsB}, {"GramB", got.GramB, want.GramB}, {"Cross", got.Cross, want.Cross},
	} {
		if !slices.Equal(f.got, f.want) {
			t.Errorf("pass %d: %s: %s differs from CollectStats's", pass, want.Name, f.name)
		}
	}
}
