package vocab_test

import (
	"fmt"

	"github.com/wtool/wtool/io/tokenizer"
	"github.com/wtool/wtool/merge/vocab"
)

// The union of a base model's vocabulary and a ChatML fine-tune's.
func ExampleBuild() {
	var models []vocab.Input
	for _, dir := range []string{"testdata/base", "testdata/chatml"} {
		tok, err := tokenizer.Load(dir)
		if err != nil {
			fmt.Println(err)
			return
		}
		n, _, _ := tokenizer.ConfigVocabSize(dir)
		models = append(models, vocab.Input{Name: dir, Tokenizer: tok, VocabSize: n})
	}
	plan, err := vocab.Build(vocab.Options{Models: models, Base: 0, Source: vocab.Union, PadToMultipleOf: 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(plan.Tokens), "tokens,", plan.VocabSize, "rows")
	id := 8
	fmt.Printf("%s: base row %d, fine-tune row %d, default %s\n", plan.Tokens[id], plan.Perm[0][id], plan.Perm[1][id], plan.Defaults[id].Why)
	// The permuted embedding of the base model, from its original rows.
	orig := func(m, r int) ([]float32, error) { return []float32{float32(100*m + r)}, nil }
	rows := make([]float32, plan.VocabSize)
	plan.Fill(0, 0, len(plan.Tokens), 1, rows, orig)
	pad, _ := plan.PadRow(0, 1, orig)
	fmt.Println(rows[:len(plan.Tokens)], pad)
	// Output:
	// 10 tokens, 12 rows
	// <|im_start|>: base row -1, fine-tune row 8, default only testdata/chatml has it
	// [0 1 2 3 4 5 6 7 108 109] [24.5]
}
