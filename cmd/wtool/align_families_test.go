package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/permute"
	"github.com/wtool/wtool/tensors"
)

// the families testdata/families/families.py writes (Llama in two shards)
var specFamilies = []string{"bert", "gemma", "gpt2", "llama", "mistral", "mixtral", "phi3", "qwen2", "resnet18", "resnet50", "vit"}

var familiesGen = testenv.Generated{Prefix: "wtool-align-families-"}

func TestMain(m *testing.M) { os.Exit(familiesGen.Run(m)) }

// familyCheckpoints writes every family's tiny checkpoint once per test
// binary and, per family, a copy with a random permutation of every group
// of its built-in spec planted (FAMILY-perm); it returns the directory.
func familyCheckpoints(t *testing.T) string {
	t.Helper()
	py := testenv.Python(t)
	return familiesGen.Dir(t, func(dir string) error {
		if err := testenv.RunScript(py, "../../testdata/families/families.py", append([]string{dir}, specFamilies...)...); err != nil {
			return err
		}
		for i, f := range specFamilies {
			if err := plant(filepath.Join(dir, f), uint64(i)); err != nil {
				return err
			}
		}
		return writeCalibration(dir)
	})
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

// writeCalibration writes DIR/images.safetensors (64 random 3x16x16
// images) and DIR/tokens.safetensors (32 sequences of 8 random token ids
// below 96, the families' vocabulary), both under the key "x".
func writeCalibration(dir string) error {
	rng := rand.New(rand.NewPCG(4, 4))
	img := make([]float32, 64*3*16*16)
	for i := range img {
		img[i] = float32(rng.NormFloat64())
	}
	ids := make([]byte, 32*8*4)
	for i := 0; i < len(ids); i += 4 {
		binary.LittleEndian.PutUint32(ids[i:], uint32(rng.IntN(96)))
	}
	files := []struct {
		name string
		t    *tensors.Tensor
	}{
		{"images.safetensors", &tensors.Tensor{Name: "x", DType: tensors.F32, Shape: []int64{64, 3, 16, 16}}},
		{"tokens.safetensors", &tensors.Tensor{Name: "x", DType: tensors.I32, Shape: []int64{32, 8}, Data: ids}},
	}
	x, err := tensors.FromFloat32("x", tensors.F32, files[0].t.Shape, img)
	if err != nil {
		return err
	}
	files[0].t = x
	for _, f := range files {
		e := safetensors.Entry{Name: "x", DType: f.t.DType, Shape: f.t.Shape}
		produce := func(context.Context, safetensors.Entry) (*tensors.Tensor, func(), error) { return f.t, nil, nil }
		if _, err := checkpoint.Write(context.Background(), filepath.Join(dir, f.name), []safetensors.Entry{e}, produce, checkpoint.WriteOptions{}); err != nil {
			return err
		}
	}
	return nil
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

// TestAlignByActivationEveryFamily: `wtool stats A B --calib X` then `wtool
// align --method activation --stats` (and --calib directly) finds a planted
// permutation back on every family: the aligned model is the original,
// except, in the random tiny ResNets, units whose activations are constant
// on the data (ReLU channels never positive), which any match fits.
func TestAlignByActivationEveryFamily(t *testing.T) {
	dir := familyCheckpoints(t)
	out := t.TempDir()
	for _, f := range specFamilies {
		t.Run(f, func(t *testing.T) {
			orig, perm := filepath.Join(dir, f), filepath.Join(dir, f+"-perm")
			calib := filepath.Join(dir, "tokens.safetensors")
			if strings.HasPrefix(f, "resnet") || f == "vit" {
				calib = filepath.Join(dir, "images.safetensors")
			}
			joint := filepath.Join(out, f+".joint.safetensors")
			if code, _, stderr := wtool(t, "stats", orig, perm, "--calib", calib, "-o", joint, "-q"); code != 0 {
				t.Fatal(stderr)
			}
			for _, src := range [][]string{{"--stats", joint}, {"--calib", calib}} {
				aligned := filepath.Join(out, f+"-act"+src[0])
				args := append([]string{"align", orig, perm, "-o", aligned, "--method", "activation", "--json", "-q"}, src...)
				code, stdout, stderr := wtool(t, args...)
				if code != 0 {
					t.Fatal(stderr)
				}
				var r struct {
					DistanceBefore float64 `json:"distance_before"`
					DistanceAfter  float64 `json:"distance_after"`
				}
				if err := json.Unmarshal([]byte(stdout), &r); err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(f, "resnet") {
					if !(r.DistanceAfter < 0.8*r.DistanceBefore) {
						t.Errorf("%s: distance %g -> %g", src[0], r.DistanceBefore, r.DistanceAfter)
					}
					continue
				}
				if r.DistanceAfter != 0 {
					t.Errorf("%s: distance %g -> %g", src[0], r.DistanceBefore, r.DistanceAfter)
				}
				sameTensors(t, orig, aligned, 0)
			}
		})
	}
}

// TestTrainedResNetPair: testdata/pairs' ResNets trained from two seeds
// (97.4% and 97.6% on the digits test set; their naive average 11.5%).
// Aligned by weight matching or by activation matching (joint statistics
// of the training images), averaged, and their BatchNorm statistics
// recomputed on the training images (`wtool reset-bn`: the average of two
// aligned networks has the right weights but not their activations'
// statistics), the merges score far above the naive average; activation
// matching nearly reaches the sources. And a permutation planted into
// resnet-a is found back exactly by both, from a trained network's weights
// and activations.
func TestTrainedResNetPair(t *testing.T) {
	pairs := "../../testdata/pairs"
	a, b := pairs+"/resnet-a", pairs+"/resnet-b"
	train, test := demoDir+"/digits_train.safetensors", demoDir+"/digits_test.safetensors"
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := wtool(t, append(args, "-q")...)
		if code != 0 {
			t.Fatalf("wtool %s: %s", strings.Join(args, " "), stderr)
		}
		return stdout
	}
	accuracy := func(model string) float64 {
		t.Helper()
		var r []struct{ Accuracy float64 }
		if err := json.Unmarshal([]byte(run("eval", model, "--data", test, "--json")), &r); err != nil || len(r) != 1 {
			t.Fatalf("%v %v", err, r)
		}
		return r[0].Accuracy
	}
	at := func(name string) string { return filepath.Join(dir, name) }
	run("merge", a, b, "--method", "linear", "-o", at("naive"))
	run("merge", a, b, "--method", "wm", "-o", at("wm"))
	run("stats", a, b, "--calib", train, "-o", at("joint.safetensors"))
	run("align", a, b, "--method", "activation", "--stats", at("joint.safetensors"), "-o", at("b-act"))
	run("merge", a, at("b-act"), "--method", "linear", "-o", at("am"))
	for _, m := range []string{"naive", "wm", "am"} {
		run("reset-bn", at(m), "--data", train, "-o", at(m+"-bn"))
	}
	acc := map[string]float64{}
	for _, m := range []string{"naive", "naive-bn", "wm", "wm-bn", "am", "am-bn"} {
		acc[m] = accuracy(at(m))
	}
	t.Logf("test accuracy: naive %.1f%% (BatchNorm reset %.1f%%), weight matching %.1f%% (%.1f%%), activation matching %.1f%% (%.1f%%)",
		100*acc["naive"], 100*acc["naive-bn"], 100*acc["wm"], 100*acc["wm-bn"], 100*acc["am"], 100*acc["am-bn"])
	if acc["naive"] > 0.2 || acc["naive-bn"] > 0.3 {
		t.Errorf("the naive average scores %.3f (%.3f with BatchNorm reset): the pair is not the hard case it should be", acc["naive"], acc["naive-bn"])
	}
	if acc["wm-bn"] < 0.4 {
		t.Errorf("weight matching then BatchNorm reset: %.3f, want > 0.4", acc["wm-bn"])
	}
	if acc["am-bn"] < 0.85 {
		t.Errorf("activation matching then BatchNorm reset: %.3f, want > 0.85", acc["am-bn"])
	}

	// a permutation planted into the trained resnet-a, found back
	planted := at("a-perm")
	m, err := checkpoint.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	s, err := permute.BuiltinSpec("auto", m, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := permute.RandomPerms(rand.New(rand.NewPCG(3, 3)), s)
	_, err = permute.ApplyCheckpoint(context.Background(), m, s, p, planted, checkpoint.WriteOptions{})
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	run("align", a, planted, "-o", at("back-wm"))
	sameTensors(t, a, at("back-wm"), 0)
	run("align", a, planted, "--method", "activation", "--calib", train, "-o", at("back-am"))
	sameTensors(t, a, at("back-am"), 0)
}
