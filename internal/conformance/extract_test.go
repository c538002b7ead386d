package conformance

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/lowrank"
	"github.com/wtool/wtool/merge"
	"github.com/wtool/wtool/tensors"
)

// perturbed writes a fine-tune of m: every floating tensor plus noise of a
// tenth of its scale (stored ties and the non-floating tensors unchanged),
// same dtypes, the same companion files.
func perturbed(t *testing.T, m *checkpoint.Model, a *arch.Arch, out string) {
	t.Helper()
	r := rand.New(rand.NewPCG(41, 42))
	tiedCopy := map[string]bool{}
	for _, tie := range a.Ties {
		if mod, ok := a.Module(tie.Module); ok && tie.Stored {
			for _, p := range mod.Params {
				tiedCopy[p.Tensor] = true
			}
		}
	}
	var entries []safetensors.Entry
	vals := map[string][]byte{}
	for _, n := range m.Names() {
		info, _ := m.Info(n)
		entries = append(entries, safetensors.Entry{Name: n, DType: info.DType, Shape: info.Shape})
		x, err := m.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		if !info.DType.IsFloat() || tiedCopy[n] {
			vals[n] = append([]byte(nil), x.Data...)
			continue
		}
		v, err := x.Float32()
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			v[i] += 0.1 * float32(r.NormFloat64())
		}
		y, err := tensors.FromFloat32(n, info.DType, info.Shape, v)
		if err != nil {
			t.Fatal(err)
		}
		vals[n] = y.Data
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		return &tensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: vals[e.Name]}, nil, nil
	}
	files, err := m.CompanionFiles()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Write(context.Background(), out, entries, produce, checkpoint.WriteOptions{CopyFiles: files}); err != nil {
		t.Fatal(err)
	}
}

// TestExtractRoundTripFamilies: for every family whose adapters wtool's
// model+lora merge applies (no convolution targets), a fine-tune changing
// every floating tensor is extracted at full rank (--embeddings lora and
// save) and merged back into the base (linear, weight 1): each tensor is the
// fine-tune's (to 1e-5 of its scale), except those the report lists as not
// in the adapter, which stay the base's.
func TestExtractRoundTripFamilies(t *testing.T) {
	_, dir := generated(t)
	for _, fam := range []string{"llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "mixtral", "bert"} {
		t.Run(fam, func(t *testing.T) {
			tmp := t.TempDir()
			base := filepath.Join(dir, fam)
			bm := open(t, base)
			ft := filepath.Join(tmp, "ft")
			perturbed(t, bm, describe(t, bm), ft)
			fm := open(t, ft)
			for _, emb := range []string{"lora", "save"} {
				lora := filepath.Join(tmp, "lora-"+emb)
				reps, _, err := lowrank.ExtractLoRA(context.Background(), bm, fm, lora, lowrank.ExtractOptions{
					Rule: lowrank.RankRule{Rank: 1 << 20}, Embeddings: emb, SVD: lowrank.SVDOptions{Exact: true}}, false)
				if err != nil {
					t.Fatal(err)
				}
				notIn := map[string]bool{}
				for _, r := range reps {
					if r.Skipped && strings.Contains(r.Note, "not in the adapter") {
						notIn[r.Module] = true
					}
				}
				out := filepath.Join(tmp, "merged-"+emb)
				p, err := merge.ParseConfig([]byte(fmt.Sprintf("models:\n  - model: %s+%s\n    parameters: {weight: 1}\nmerge_method: linear\ndtype: float32\n", base, lora)))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := merge.Execute(context.Background(), p, out, checkpoint.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				om := open(t, out)
				for _, n := range fm.Names() {
					info, _ := fm.Info(n)
					if !info.DType.IsFloat() || !om.Has(n) {
						continue
					}
					got, want, b := floats(t, om, n), floats(t, fm, n), floats(t, bm, n)
					if notIn[n] {
						want = b
					}
					var worst, scale float64
					for i := range got {
						worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
						scale = max(scale, math.Abs(float64(want[i])))
					}
					if worst > 1e-5*max(scale, 1) {
						t.Errorf("%s: %s: merged differs from the %s by %g (not in the adapter: %v)", emb, n, map[bool]string{true: "base", false: "fine-tune"}[notIn[n]], worst, notIn[n])
					}
				}
				t.Logf("%s: %d tensors, not in the adapter: %v", emb, len(fm.Names()), slices.Sorted(maps.Keys(notIn)))
			}
		})
	}
}
