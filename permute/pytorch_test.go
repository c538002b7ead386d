package permute

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// the families testdata/families/families.py builds
var torchFamilies = []string{"bert", "gemma", "gpt2", "llama", "mistral", "mixtral", "phi3", "qwen2", "resnet18", "resnet50", "vit"}

// TestBuiltinSpecsInvariantInPyTorch: for every family, the built-in spec
// (BuildSpec on io/arch's description) with a random permutation of every
// group, applied by wtool to the family's tiny checkpoint, leaves the
// PyTorch reference forward pass unchanged in float64 (BatchNorm in eval
// mode: its running statistics must move with their channels); and the same
// permutation with one tensor left out does change it (the comparison is
// not vacuous).
func TestBuiltinSpecsInvariantInPyTorch(t *testing.T) {
	py := testenv.Python(t)
	dir := torchCheckpoints(t)
	ctx := context.Background()
	for i, f := range torchFamilies {
		m, err := checkpoint.Open(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		a, err := arch.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		as, err := BuildSpec(a)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		s := as.Spec
		// a random permutation of every group, none the identity
		rng := rand.New(rand.NewPCG(uint64(i), 77))
		p := RandomPerms(rng, s)
		for slices.ContainsFunc(s.GroupNames(), func(g string) bool { return s.Groups[g] > 1 && slices.IsSorted(p[g]) }) {
			p = RandomPerms(rng, s)
		}
		if _, err := ApplyCheckpoint(ctx, m, s, p, filepath.Join(dir, f+"-perm"), checkpoint.WriteOptions{}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// the control: the largest group's first tensor left unpermuted
		big := ""
		for _, g := range s.GroupNames() {
			if big == "" || s.Groups[g] > s.Groups[big] {
				big = g
			}
		}
		left := s.Uses(big)[0].Tensor
		broken := &Spec{Groups: s.Groups, Within: s.Within, Tensors: maps2(s.Tensors)}
		broken.Tensors[left] = nil
		if _, err := ApplyCheckpoint(ctx, m, broken, p, filepath.Join(dir, f+"-broken"), checkpoint.WriteOptions{}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		// weight matching finds the planted permutation back exactly
		pm, err := checkpoint.Open(filepath.Join(dir, f+"-perm"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := MatchModels(ctx, s, []*checkpoint.Model{m, pm}, MatchOptions{Seed: 1})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want := p.Inverse()
		for _, g := range s.GroupNames() {
			if !slices.Equal(res.Perms[1][g], want[g]) {
				t.Errorf("%s: weight matching: group %s: found %v, planted %v", f, g, res.Perms[1][g], want[g])
			}
		}
		if res.DistanceAfter > 1e-6*res.DistanceBefore {
			t.Errorf("%s: weight matching: distance %g -> %g", f, res.DistanceBefore, res.DistanceAfter)
		}
		t.Logf("%-8s weight matching: %d groups, %d sweeps, distance %.3g -> %.3g", f, len(s.Groups), res.Sweeps, res.DistanceBefore, res.DistanceAfter)
		pm.Close()
		m.Close()
	}
	cmd := exec.Command(py, "-B", "testdata/invariance.py", dir)
	cmd.Args = append(cmd.Args, torchFamilies...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("invariance.py: %v\n%s", err, stderr.Bytes())
	}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r struct {
			Family              string
			Scale, Perm, Broken float64
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		seen++
		t.Logf("%-8s outputs up to %.3g: permuted differs by %.2g, control by %.2g", r.Family, r.Scale, r.Perm, r.Broken)
		if tol := 1e-9 * (1 + r.Scale); r.Perm > tol {
			t.Errorf("%s: the permuted model's outputs differ by %g (scale %g)", r.Family, r.Perm, r.Scale)
		}
		if r.Broken < 1e-4*(1+r.Scale) {
			t.Errorf("%s: leaving a tensor unpermuted changed the outputs by only %g: the check is vacuous", r.Family, r.Broken)
		}
	}
	if seen != len(torchFamilies) {
		t.Fatalf("%d results for %d families", seen, len(torchFamilies))
	}
}

func maps2(m map[string][]Axis) map[string][]Axis {
	out := make(map[string][]Axis, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
