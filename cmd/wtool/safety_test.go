package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wtool/wtool/internal/faultinject"
)

// copyTree copies the files of src (a file or a directory, not recursive
// beyond one level) to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if !st.IsDir() {
		copyOne(t, src, dst)
		return
	}
	os.MkdirAll(dst, 0o755)
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		if e.Type().IsRegular() {
			copyOne(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
		}
	}
}

func copyOne(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	os.MkdirAll(filepath.Dir(dst), 0o755)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

// treeHash hashes every file under dir (names and contents).
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		fmt.Fprintf(h, "%s %x\n", p, sha256.Sum256(b))
		return nil
	})
	return fmt.Sprintf("%x", h.Sum(nil))
}

// inputs prepares copies of the demo files: models a, b, c (c as a base)
// and the calibration data, under dir.
func demoInputs(t *testing.T, dir string) (a, b, base, calib string) {
	a, b, base = filepath.Join(dir, "mlp-a"), filepath.Join(dir, "mlp-b"), filepath.Join(dir, "mlp-c")
	copyTree(t, demoDir+"/mlp-a", a)
	copyTree(t, demoDir+"/mlp-b", b)
	copyTree(t, demoDir+"/mlp-a", base)
	calib = filepath.Join(dir, "digits.safetensors")
	copyOne(t, demoDir+"/digits_train.safetensors", calib)
	return
}

// TestFaultInjection truncates a mapped input at a chosen tensor, the first
// time its bytes are handed out, for every command that reads mapped
// files: each must fail with exit 1 and a message naming the file and a
// tensor, and leave nothing behind.
func TestFaultInjection(t *testing.T) {
	type tc struct {
		name   string
		file   func(a, b, base, calib string) string // the file to truncate
		tensor string
		args   func(a, b, base, calib, out string) []string
	}
	weights := func(a, b, base, calib string) string { return filepath.Join(a, "model.safetensors") }
	weightsB := func(a, b, base, calib string) string { return filepath.Join(b, "model.safetensors") }
	calibFile := func(a, b, base, calib string) string { return calib }
	cases := []tc{
		{"convert f16", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"convert", a, "-o", out, "--dtype", "f16"}
		}},
		{"convert copy", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"convert", a, "-o", out + ".safetensors"}
		}},
		{"convert sharded", weights, "fc4.weight", func(a, b, base, calib, out string) []string {
			return []string{"convert", a, "-o", out, "--max-shard-size", "20kB", "--dtype", "bf16"}
		}},
		{"validate values", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"validate", a, "--values"}
		}},
		{"merge linear", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "-o", out, "--method", "linear"}
		}},
		{"merge slerp", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "-o", out, "--method", "slerp", "--t", "0.3"}
		}},
		{"merge ties", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "--base", base, "-o", out, "--method", "ties", "--density", "0.5"}
		}},
		{"merge dare-ties", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "--base", base, "-o", out, "--method", "dare-ties", "--density", "0.5"}
		}},
		{"merge wm", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "-o", out, "--method", "wm"}
		}},
		{"merge pleas calib", calibFile, "x", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "-o", out, "--method", "pleas", "--calib", calib}
		}},
		{"merge regmean", weightsB, "fc2.weight", func(a, b, base, calib, out string) []string {
			return []string{"merge", a, b, "-o", out, "--method", "regmean", "--calib", calib}
		}},
		{"spectrum", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"spectrum", a, "--plot", out + ".png"}
		}},
		{"compress", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"compress", a, "-o", out, "--rank", "8", "--target", "fc[1-4]"}
		}},
		{"compress whiten calib", calibFile, "x", func(a, b, base, calib, out string) []string {
			return []string{"compress", a, "-o", out, "--method", "whiten", "--calib", calib, "--rank", "8", "--target", "fc[1-4]"}
		}},
		{"adapter pissa", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"adapter", a, "-o", out, "--rank", "4"}
		}},
		{"adapter sorsa", weights, "fc4.weight", func(a, b, base, calib, out string) []string {
			return []string{"adapter", a, "-o", out, "--rank", "4", "--method", "sorsa"}
		}},
		{"align", weightsB, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"align", a, b, "-o", out}
		}},
		{"align activation", calibFile, "x", func(a, b, base, calib, out string) []string {
			return []string{"align", a, b, "-o", out, "--method", "activation", "--calib", calib}
		}},
		{"stats", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"stats", a, "--calib", calib, "-o", out + ".safetensors"}
		}},
		{"stats calib", calibFile, "x", func(a, b, base, calib, out string) []string {
			return []string{"stats", a, b, "--calib", calib, "-o", out + ".safetensors"}
		}},
		{"fisher", weights, "fc3.weight", func(a, b, base, calib, out string) []string {
			return []string{"fisher", a, "--calib", calib, "--labels", calib, "-o", out + ".safetensors"}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, outDir := t.TempDir(), t.TempDir()
			a, b, base, calib := demoInputs(t, in)
			file := c.file(a, b, base, calib)
			out := filepath.Join(outDir, "out")
			faultinject.TruncateAt(file, c.tensor)
			code, _, stderr := wtool(t, append(c.args(a, b, base, calib, out), "-q")...)
			fired := faultinject.Reset()
			if !fired {
				t.Fatalf("the injection did not fire (exit %d, %s)", code, stderr)
			}
			if code != exitFailure || !strings.Contains(stderr, file) || !strings.Contains(stderr, `tensor "`) || !strings.Contains(stderr, "truncated") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			if left, _ := os.ReadDir(outDir); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			var tmps []string
			filepath.WalkDir(in, func(p string, d os.DirEntry, err error) error {
				if d != nil && strings.Contains(d.Name(), ".tmp-") {
					tmps = append(tmps, p)
				}
				return nil
			})
			if len(tmps) > 0 {
				t.Errorf("temporaries left: %v", tmps)
			}
		})
	}
}

// TestFaultInjectionAdapterConvert: a trained adapter truncated while read.
func TestFaultInjectionAdapterConvert(t *testing.T) {
	dir := t.TempDir()
	init := filepath.Join(dir, "pissa")
	if code, _, stderr := wtool(t, "adapter", demoDir+"/mlp-a", "-o", init, "--rank", "4", "-q"); code != 0 {
		t.Fatal(stderr)
	}
	trained := filepath.Join(dir, "trained")
	copyTree(t, filepath.Join(init, "adapter"), trained)
	file := filepath.Join(trained, "adapter_model.safetensors")
	faultinject.TruncateAt(file, "base_model.model.fc3.lora_B.weight")
	code, _, stderr := wtool(t, "adapter", "convert", filepath.Join(init, "adapter"), trained, "-o", filepath.Join(dir, "lora"), "-q")
	if !faultinject.Reset() {
		t.Fatal("did not fire")
	}
	if code != exitFailure || !strings.Contains(stderr, file) || !strings.Contains(stderr, "truncated") {
		t.Errorf("exit %d, %s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "lora")); err == nil {
		t.Error("output written")
	}
}

// buildWtool builds the command once for the tests that need a process.
func buildWtool(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "wtool-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "wtool")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)
