package vocab

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/io/tokenizer"
)

// writeBigTokenizer writes a Llama-3-sized BPE tokenizer: 128000 tokens,
// 280000 merges, 256 special added tokens, with extra tokens of its own.
func writeBigTokenizer(b testing.TB, dir string, extra int) {
	vocab := make(map[string]int, 128000+extra)
	for i := 0; i < 128000; i++ {
		vocab[fmt.Sprintf("tok%06d", i)] = i
	}
	for i := 0; i < extra; i++ {
		vocab[fmt.Sprintf("own%s%05d", filepath.Base(dir), i)] = 128000 + i
	}
	merges := make([]string, 280000)
	for i := range merges {
		merges[i] = fmt.Sprintf("tok%06d tok%06d", i%128000, (i*7)%128000)
	}
	var added []tokenizer.AddedToken
	n := 128000 + extra
	for i := 0; i < 256; i++ {
		added = append(added, tokenizer.AddedToken{ID: n + i, Content: fmt.Sprintf("<|reserved_%d|>", i), Special: true})
	}
	doc := map[string]any{"version": "1.0", "added_tokens": added,
		"model": map[string]any{"type": "BPE", "vocab": vocab, "merges": merges}}
	buf, _ := json.Marshal(doc)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, tokenizer.TokenizerFile), buf, 0o644)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"vocab_size": %d}`, n+256)), 0o644)
}

// BenchmarkUnionLlama3Sized: load two Llama-3-sized tokenizers (1000 tokens
// of their own each) and build their union's row plans.
func BenchmarkUnionLlama3Sized(b *testing.B) {
	dir := b.TempDir()
	writeBigTokenizer(b, filepath.Join(dir, "a"), 1000)
	writeBigTokenizer(b, filepath.Join(dir, "b"), 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ms []Input
		for _, n := range []string{"a", "b"} {
			tok, err := tokenizer.Load(filepath.Join(dir, n))
			if err != nil {
				b.Fatal(err)
			}
			vs, _, _ := tokenizer.ConfigVocabSize(filepath.Join(dir, n))
			ms = append(ms, Input{Name: n, Tokenizer: tok, VocabSize: vs})
		}
		p, err := Build(Options{Models: ms, Base: 0, Source: Union})
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Tokens) != 128000+2000+256 {
			b.Fatalf("%d tokens", len(p.Tokens))
		}
		if _, err := p.Tokenizer.Files(); err != nil {
			b.Fatal(err)
		}
	}
}
