package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/permute"
)

// the families testdata/families/families.py writes (Llama in two shards)
var specFamilies = []string{"bert", "gemma", "gpt2", "llama", "mistral", "mixtral", "phi3", "qwen2", "resnet18", "resnet50", "vit"}

var (
	familiesOnce sync.Once
	familiesDir  string
	familiesErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if familiesDir != "" {
		os.RemoveAll(familiesDir)
	}
	os.Exit(code)
}

// familyCheckpoints writes every family's tiny checkpoint once per test
// binary and, per family, a copy with a random permutation of every group
// of its built-in spec planted (FAMILY-perm); it returns the directory.
func familyCheckpoints(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	familiesOnce.Do(func() {
		familiesDir, familiesErr = os.MkdirTemp("", "wtool-align-families-")
		if familiesErr != nil {
			return
		}
		gen := exec.Command(py, "-B", "../../testdata/families/families.py", familiesDir)
		gen.Args = append(gen.Args, specFamilies...)
		if out, err := gen.CombinedOutput(); err != nil {
			familiesErr = fmt.Errorf("families.py: %v\n%s", err, out)
			return
		}
		for i, f := range specFamilies {
			if familiesErr = plant(filepath.Join(familiesDir, f), uint64(i)); familiesErr != nil {
				return
			}
		}
	})
	if familiesErr != nil {
		t.Fatal(familiesErr)
	}
	return familiesDir
}

// plant writes PATH-perm: PATH with a random permutation (none the
// identity) of every group of its built-in spec.
func plant(path string, seed uint64) error {
	m, err := checkpoint.Open(path)
	if err != nil {
		return err
	}
	defer m.Close()
	s, err := permute.BuiltinSpec("auto", m, nil)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 91))
	p := permute.RandomPerms(rng, s)
	for slices.ContainsFunc(s.GroupNames(), func(g string) bool { return s.Groups[g] > 1 && slices.IsSorted(p[g]) }) {
		p = permute.RandomPerms(rng, s)
	}
	_, err = permute.ApplyCheckpoint(context.Background(), m, s, p, path+"-perm", checkpoint.WriteOptions{})
	return err
}

// sameTensors fails unless the two checkpoints hold the same tensors with
// values equal within tol (relative to the tensor's largest value).
func sameTensors(t *testing.T, want, got string, tol float64) {
	t.Helper()
	a, err := checkpoint.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := checkpoint.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !slices.Equal(a.Names(), b.Names()) {
		t.Fatalf("%s has tensors %v, %s %v", got, b.Names(), want, a.Names())
	}
	for _, n := range a.Names() {
		x, err := a.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		y, err := b.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		if !x.DType.IsFloat() {
			continue
		}
		u, _ := x.Float64()
		v, _ := y.Float64()
		scale := 0.0
		for _, e := range u {
			scale = max(scale, math.Abs(e))
		}
		for i := range u {
			if math.Abs(u[i]-v[i]) > tol*(1+scale) {
				t.Fatalf("%s: tensor %s element %d: %g, want %g", got, n, i, v[i], u[i])
			}
		}
	}
}

// TestAlignAndMergeEveryFamily: on every family's tiny checkpoint with a
// random permutation of every group of its built-in spec planted, `wtool
// align` (the default --spec auto, weight matching) writes back the original
// weights exactly, and `wtool merge --method wm` of the original and the
// permuted copy, by flags and by a mergekit-style YAML config, is the
// original (the average of two equal models).
func TestAlignAndMergeEveryFamily(t *testing.T) {
	dir := familyCheckpoints(t)
	out := t.TempDir()
	for _, f := range specFamilies {
		t.Run(f, func(t *testing.T) {
			orig, perm := filepath.Join(dir, f), filepath.Join(dir, f+"-perm")
			aligned := filepath.Join(out, f+"-aligned")
			if code, _, stderr := wtool(t, "align", orig, perm, "-o", aligned, "-q"); code != 0 {
				t.Fatal(stderr)
			}
			sameTensors(t, orig, aligned, 0)
			merged := filepath.Join(out, f+"-wm")
			if code, _, stderr := wtool(t, "merge", orig, perm, "--method", "wm", "-o", merged, "-q"); code != 0 {
				t.Fatal(stderr)
			}
			sameTensors(t, orig, merged, 1e-6)
			cfg := filepath.Join(out, f+".yaml")
			yaml := "models:\n  - model: " + orig + "\n  - model: " + perm + "\nmerge_method: wm\nparameters: {spec: auto}\n"
			if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			merged = filepath.Join(out, f+"-wm-yaml")
			if code, _, stderr := wtool(t, "merge", "--config", cfg, "-o", merged, "-q"); code != 0 {
				t.Fatal(stderr)
			}
			sameTensors(t, orig, merged, 1e-6)
		})
	}
}
