package merge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/io/tokenizer"
	"github.com/wtool/wtool/tensors"
)

// vocabModel writes a model whose tokenizer and config.json are
// merge/vocab's test fixture fix (rows = its vocab_size), with random
// embeddings and head, and one layer tensor.
func vocabModel(t *testing.T, dir, fix string, rows int, seed uint64) map[string][]float32 {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	vals := map[string][]float32{}
	shapes := map[string][]int64{"model.embed_tokens.weight": {int64(rows), 4}, "lm_head.weight": {int64(rows), 4}, "model.layers.0.mlp.up_proj.weight": {4, 4}}
	var entries []safetensors.Entry
	for _, n := range []string{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "lm_head.weight"} {
		v := make([]float32, shapes[n][0]*shapes[n][1])
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		vals[n] = v
		entries = append(entries, safetensors.Entry{Name: n, DType: tensors.F32, Shape: shapes[n]})
	}
	files := map[string][]byte{}
	src := filepath.Join("vocab", "testdata", fix)
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := tensors.FromFloat32(e.Name, e.DType, e.Shape, vals[e.Name])
		return x, nil, err
	}
	if _, err := checkpoint.Write(context.Background(), dir, entries, produce, checkpoint.WriteOptions{Files: files}); err != nil {
		t.Fatal(err)
	}
	return vals
}

// TestTokenizerUnion: a linear merge of two models whose vocabularies
// differ (ids moved, tokens only in one), with tokenizer_source: union:
// every shared token merges the two models' own rows for it, a token only
// the base has takes the base's row for the other model, one only the
// other has takes that model's row; the tokenizer, vocab_size and chat
// template are written; padding rows are the mean permuted rows.
func TestTokenizerUnion(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "base"), filepath.Join(dir, "other")
	va := vocabModel(t, a, "base", 8, 1)
	vb := vocabModel(t, b, "other", 7, 2)
	idA := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4, "c": 5, "ab": 6, "bc": 7}
	idB := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2, "c": 3, "b": 4, "a": 5, "x": 6}
	order := []string{"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "x"} // the union's ids
	row := func(v []float32, id int) []float64 {
		out := make([]float64, 4)
		for k := range out {
			out[k] = float64(v[4*id+k])
		}
		return out
	}
	for _, tc := range []struct {
		name, section string
		rows          int
	}{
		{"union", "tokenizer_source: union\nchat_template: chatml\n", 9},
		{"padded", "tokenizer:\n  source: union\n  pad_to_multiple_of: 4\n", 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name)
			runConfig(t, fmt.Sprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nbase_model: %s\nparameters: {weight: 0.5}\n%s", a, b, a, tc.section), out)
			for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
				got := read(t, out, name)
				if len(got) != 4*tc.rows {
					t.Fatalf("%s has %d rows, want %d", name, len(got)/4, tc.rows)
				}
				perm := [2][][]float64{}
				for id, tok := range order {
					var ra, rb []float64
					ia, okA := idA[tok]
					ib, okB := idB[tok]
					switch {
					case okA && okB:
						ra, rb = row(va[name], ia), row(vb[name], ib)
					case okA: // the other model lacks it: the base's row
						ra, rb = row(va[name], ia), row(va[name], ia)
					default: // only the other model has it
						ra, rb = row(vb[name], ib), row(vb[name], ib)
					}
					perm[0], perm[1] = append(perm[0], ra), append(perm[1], rb)
					for k := range 4 {
						if want := 0.5*ra[k] + 0.5*rb[k]; math.Abs(float64(got[4*id+k])-want) > 1e-6 {
							t.Fatalf("%s: token %q (id %d) = %v, want %g at %d", name, tok, id, got[4*id:4*id+4], want, k)
						}
					}
				}
				for id := len(order); id < tc.rows; id++ { // padding: the mean permuted rows
					for k := range 4 {
						want := 0.0
						for m := range 2 {
							s := 0.0
							for _, r := range perm[m] {
								s += r[k]
							}
							want += 0.5 * s / float64(len(order))
						}
						if math.Abs(float64(got[4*id+k])-want) > 1e-5 {
							t.Fatalf("%s: padding row %d = %v, want %g at %d", name, id, got[4*id:4*id+4], want, k)
						}
					}
				}
			}
			// the layers merge as usual
			up := read(t, out, "model.layers.0.mlp.up_proj.weight")
			for i := range up {
				if want := 0.5*va["model.layers.0.mlp.up_proj.weight"][i] + 0.5*vb["model.layers.0.mlp.up_proj.weight"][i]; abs32(up[i]-want) > 1e-6 {
					t.Fatalf("layer tensor: %g, want %g", up[i], want)
				}
			}
			tok, err := tokenizer.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			for id, s := range order {
				if got, ok := tok.ID(s); !ok || got != id {
					t.Errorf("output tokenizer: %q has id %d (%v), want %d", s, got, ok, id)
				}
			}
			if n := tokenizerVocabSize(t, out); n != tc.rows {
				t.Errorf("config.json vocab_size %d, want %d", n, tc.rows)
			}
			// chat_template: chatml replaces the base tokenizer's own
			tmpl, _ := tok.ChatTemplate()
			if chatml := strings.Contains(tmpl, "<|im_start|>"); chatml != (tc.name == "union") {
				t.Errorf("chat template %q", tmpl)
			}
		})
	}

	// without a tokenizer section, the differing embeddings are refused
	// with an explanation
	p, err := ParseConfig([]byte(fmt.Sprintf("models:\n  - model: %s\n  - model: %s\nmerge_method: linear\nparameters: {weight: 0.5}\n", a, b)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Execute(context.Background(), p, filepath.Join(dir, "refused"), checkpoint.WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "tokenizer_source: union") {
		t.Errorf("differing vocabularies without a tokenizer section: %v", err)
	}
}

func tokenizerVocabSize(t *testing.T, dir string) int {
	t.Helper()
	n, ok, err := tokenizer.ConfigVocabSize(dir)
	if err != nil || !ok {
		t.Fatalf("vocab_size: %v %v", ok, err)
	}
	return n
}
