package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunAndPlot(t *testing.T) {
	dir := "../../testdata/demo"
	if _, err := os.Stat(dir); err != nil {
		t.Skip(err)
	}
	rows, err := Run(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	acc := map[string]float64{}
	for _, r := range rows {
		acc[r.Pair+"|"+r.Method] = r.Accuracy
	}
	same, split := Pairs[0].Name, Pairs[1].Name
	if acc[same+"|linear (naive average)"] > 0.5 || acc[same+"|wm (weight matching)"] < 0.9 || acc[same+"|pleas width 1.0"] < acc[same+"|source mlp-a"]-0.01 {
		t.Errorf("same-data pair: %v", acc)
	}
	// models trained on different label sets: each source knows half the
	// classes; PLeaS's merge knows most of both
	if acc[split+"|pleas width 1.5"] < 0.8 || acc[split+"|source mlp-c"] > 0.55 {
		t.Errorf("label-split pair: %v", acc)
	}
	var buf bytes.Buffer
	Print(&buf, rows)
	if !strings.Contains(buf.String(), "pleas width 2.0") || strings.Count(buf.String(), "\n") != len(rows)+3 {
		t.Errorf("table:\n%s", buf.String())
	}
	naive, aligned, err := Curves(context.Background(), dir, Pairs[0], 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(naive) != 5 || naive[2].Accuracy > 0.5 || aligned[2].Accuracy < 0.9 || naive[0].Accuracy != aligned[0].Accuracy {
		t.Errorf("curves %v %v", naive, aligned)
	}
	png := filepath.Join(t.TempDir(), "c.png")
	if err := Plot(png, "test", naive, aligned); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(png); !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Error("not a PNG")
	}
}

// TestEmbeddedDemo: the copy built into the binary is testdata/demo's files,
// byte for byte.
func TestEmbeddedDemo(t *testing.T) {
	src := "../../testdata/demo"
	dst := t.TempDir()
	if err := Extract(dst); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range []string{"digits_train.safetensors", "digits_test.safetensors", "mlp-a/model.safetensors", "mlp-a/config.json",
		"mlp-b/model.safetensors", "mlp-c/model.safetensors", "mlp-d/model.safetensors", "mlp-d/config.json"} {
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dst, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: embedded copy differs (%v)", p, err)
		}
		n++
	}
	if n == 0 {
		t.Fatal("nothing compared")
	}
}
