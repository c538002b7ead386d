package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// writeModel writes a single-file model of float32 tensors (converted to
// dtype) with the given shapes and values.
func writeModel(t *testing.T, path string, dtype tensors.DType, ts map[string][]float32, shapes map[string][]int64) {
	t.Helper()
	var list []*tensors.Tensor
	for name, v := range ts {
		shape := shapes[name]
		if shape == nil {
			shape = []int64{int64(len(v))}
		}
		x, err := tensors.FromFloat32(name, dtype, shape, v)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, x)
	}
	var b bytes.Buffer
	if err := safetensors.Encode(&b, list, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// demoWith writes a copy of the demo MLP a with one tensor's values changed.
func demoWith(t *testing.T, dir string, dtype tensors.DType, edit func(name string, v []float32)) string {
	t.Helper()
	out := filepath.Join(dir, "model.safetensors")
	code, _, stderr := wtool(t, "convert", demoDir+"/mlp-a", "-o", out, "-q")
	if code != 0 {
		t.Fatal(stderr)
	}
	data, _ := os.ReadFile(out)
	h, err := safetensors.ParseHeader(data)
	if err != nil {
		t.Fatal(err)
	}
	ts, shapes := map[string][]float32{}, map[string][]int64{}
	for _, info := range h.Tensors {
		x := &tensors.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: data[h.DataOffset+info.Begin : h.DataOffset+info.End]}
		v, _ := x.Float32()
		edit(info.Name, v)
		ts[info.Name], shapes[info.Name] = v, info.Shape
	}
	writeModel(t, out, dtype, ts, shapes)
	return out
}

// TestNonFiniteNeverWritten: values that would be written as NaN or Inf —
// overflows of f16, NaN in an input, overflowing statistics, a diverged
// adapter — are refused (exit 1, nothing written) unless --allow-nonfinite.
func TestNonFiniteNeverWritten(t *testing.T) {
	dir := t.TempDir()
	big := demoWith(t, filepath.Join(dir, "big"), tensors.F32, func(name string, v []float32) {
		if name == "fc2.weight" {
			v[7] = 1e5 // finite in f32, +Inf in f16
		}
	})
	nan := demoWith(t, filepath.Join(dir, "nan"), tensors.F32, func(name string, v []float32) {
		if name == "fc3.bias" {
			v[2] = float32(math.NaN())
		}
	})
	huge := demoWith(t, filepath.Join(dir, "huge"), tensors.F32, func(name string, v []float32) {
		if name == "fc1.weight" {
			for i := range v {
				v[i] = 3e38
			}
		}
	})
	b7 := demoWith(t, filepath.Join(dir, "b7"), tensors.F32, func(name string, v []float32) {
		if name == "fc2.weight" {
			v[0] = 7e4
		}
	})
	// an f16 weight whose rank-1 residual is about -2 * 60000 at [0, 0]
	const n = 16
	w := make([]float32, n*n)
	for i := range w {
		w[i] = 60000
	}
	w[0] = -60000
	resid := filepath.Join(dir, "resid", "model.safetensors")
	writeModel(t, resid, tensors.F16, map[string][]float32{"fc.weight": w}, map[string][]int64{"fc.weight": {n, n}})
	calib := demoDir + "/digits_train.safetensors"
	// a trained adapter that diverged
	pissa := filepath.Join(dir, "pissa")
	if code, _, stderr := wtool(t, "adapter", demoDir+"/mlp-a", "-o", pissa, "--rank", "4", "-q"); code != 0 {
		t.Fatal(stderr)
	}
	trained := filepath.Join(dir, "trained")
	copyTree(t, filepath.Join(pissa, "adapter"), trained)
	{
		p := filepath.Join(trained, "adapter_model.safetensors")
		data, _ := os.ReadFile(p)
		h, _ := safetensors.ParseHeader(data)
		info, _ := h.Lookup("base_model.model.fc2.lora_B.weight")
		off := h.DataOffset + info.Begin + 4*3
		copy(data[off:], []byte{0, 0, 0xc0, 0x7f}) // a NaN
		os.WriteFile(p, data, 0o644)
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"convert to f16 overflows", []string{"convert", big, "--dtype", "f16"}, "overflow"},
		{"convert copies a NaN", []string{"convert", nan}, "holds NaN"},
		{"merge to f16 overflows", []string{"merge", b7, b7, "--method", "linear", "--dtype", "f16"}, "65504"},
		{"compress to f16 overflows", []string{"compress", big, "--rank", "4", "--target", "fc[13]", "--dtype", "f16"}, "overflow"},
		{"f16 adapter residual overflows", []string{"adapter", filepath.Dir(resid), "--rank", "1", "--target", "fc"}, `"fc.weight"`},
		{"stats of 3e38 weights", []string{"stats", huge, "--calib", calib}, "Inf"},
		{"stats of a NaN weight", []string{"stats", nan, "--calib", calib}, "NaN"},
		{"fisher of a NaN weight", []string{"fisher", nan, "--calib", calib, "--labels", calib}, "NaN"},
		{"adapter convert of a NaN adapter", []string{"adapter", "convert", filepath.Join(pissa, "adapter"), trained}, "NaN"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("out%d", i))
			if strings.HasPrefix(tc.name, "stats") || strings.HasPrefix(tc.name, "fisher") {
				out += ".safetensors"
			}
			code, _, stderr := wtool(t, append(tc.args, "-o", out, "-q")...)
			if code != exitFailure || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "--allow-nonfinite") {
				t.Errorf("exit %d, stderr %q (want %q)", code, stderr, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("an output was written")
			}
			if code, _, stderr := wtool(t, append(tc.args, "-o", out, "-q", "--allow-nonfinite")...); code != 0 {
				t.Errorf("--allow-nonfinite: exit %d, %s", code, stderr)
			}
		})
	}
	if left := leftoverTemps(dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
}

func leftoverTemps(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if d != nil && strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestPartsAreByteIdentical: a run split into N parts (N = 1..5) and
// finalized gives the bytes of a single run, for every command that writes
// sharded checkpoints.
func TestPartsAreByteIdentical(t *testing.T) {
	a, b := demoDir+"/mlp-a", demoDir+"/mlp-b"
	commands := []struct {
		name string
		args []string
	}{
		{"merge ties", []string{"merge", a, b, "--base", demoDir + "/mlp-c", "--method", "ties", "--density", "0.5"}},
		{"convert", []string{"convert", a, "--dtype", "bf16"}},
		{"compress energy", []string{"compress", a, "--energy", "0.9"}},
		{"adapter pissa", []string{"adapter", a, "--rank", "4"}},
		{"align", []string{"align", a, b}},
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			dir := fastTempDir(t)
			// the same output path every time: files may record it (a PiSSA
			// adapter's base_model_name_or_path)
			out := filepath.Join(dir, "out")
			single := filepath.Join(dir, "single")
			args := append(c.args, "--max-shard-size", "10kB", "-q")
			if code, _, stderr := wtool(t, append(args, "-o", out)...); code != 0 {
				t.Fatal(stderr)
			}
			if err := os.Rename(out, single); err != nil {
				t.Fatal(err)
			}
			for n := 1; n <= 5; n++ {
				for k := n; k >= 1; k-- { // any order
					if code, _, stderr := wtool(t, append(args, "-o", out, "--part", fmt.Sprintf("%d/%d", k, n))...); code != 0 {
						t.Fatalf("part %d/%d: %s", k, n, stderr)
					}
				}
				if _, err := os.Stat(out); err == nil {
					t.Fatal("a part wrote the output itself")
				}
				if code, _, stderr := wtool(t, "finalize", out, "-q", "--verify"); code != 0 {
					t.Fatalf("finalize %d parts: %s", n, stderr)
				}
				if !sameTree(t, single, out) {
					t.Errorf("%d parts: the output differs from a single run", n)
				}
				if _, err := os.Stat(out + ".parts"); err == nil {
					t.Error("the parts directory was left behind")
				}
				os.RemoveAll(out)
			}
		})
	}
}

// sameTree compares two directory trees file by file.
func sameTree(t *testing.T, a, b string) bool {
	t.Helper()
	same := true
	count := 0
	filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		count++
		rel, _ := filepath.Rel(a, p)
		x, _ := os.ReadFile(p)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Logf("%s differs", rel)
			same = false
		}
		return nil
	})
	filepath.WalkDir(b, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			count--
		}
		return nil
	})
	return same && count == 0
}

// TestFinalizeNamesBadParts: a missing part, a part run with other
// arguments, a truncated shard and (with --verify) a corrupted one are
// named, and nothing is written.
func TestFinalizeNamesBadParts(t *testing.T) {
	a, b := demoDir+"/mlp-a", demoDir+"/mlp-b"
	args := []string{"merge", a, b, "--method", "linear", "--max-shard-size", "10kB", "-q"}
	run3 := func(t *testing.T, out string, skip int, edit func(k int) []string) {
		for k := 1; k <= 3; k++ {
			if k == skip {
				continue
			}
			extra := []string{}
			if edit != nil {
				extra = edit(k)
			}
			if code, _, stderr := wtool(t, append(append(args, "-o", out, "--part", fmt.Sprintf("%d/3", k)), extra...)...); code != 0 {
				t.Fatal(stderr)
			}
		}
	}
	shardOf := func(t *testing.T, out string, k int) string {
		m, _ := filepath.Glob(filepath.Join(out+".parts", fmt.Sprintf("part-%05d-of-00003", k), "model-*.safetensors"))
		if len(m) == 0 {
			t.Fatal("no shard in part", k)
		}
		return m[0]
	}
	cases := []struct {
		name   string
		setup  func(t *testing.T, out string)
		verify bool
		want   []string
	}{
		{"missing part", func(t *testing.T, out string) { run3(t, out, 2, nil) }, false, []string{"part 2/3", "missing", "--part 2/3"}},
		{"other arguments", func(t *testing.T, out string) {
			run3(t, out, 0, func(k int) []string {
				if k == 3 {
					return []string{"--weights", "1,2"}
				}
				return nil
			})
		}, false, []string{"part 3/3", "other arguments"}},
		{"truncated shard", func(t *testing.T, out string) {
			run3(t, out, 0, nil)
			p := shardOf(t, out, 2)
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-10)
		}, false, []string{"part 2/3", filepath.Base("model-")}},
		{"corrupted shard", func(t *testing.T, out string) {
			run3(t, out, 0, nil)
			p := shardOf(t, out, 1)
			data, _ := os.ReadFile(p)
			data[len(data)-3] ^= 0x40
			os.WriteFile(p, data, 0o644)
		}, true, []string{"part 1/3", "corrupt", "checksum"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			tc.setup(t, out)
			fargs := []string{"finalize", out}
			if tc.verify {
				fargs = append(fargs, "--verify")
			}
			code, _, stderr := wtool(t, fargs...)
			if code != exitFailure {
				t.Errorf("exit %d: %s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not mention %q", stderr, w)
				}
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("the output was written")
			}
		})
	}
}

// TestResumeAfterKill: a multi-shard merge SIGKILLed after its third
// shard, run again with --resume, gives the bytes of an uninterrupted run
// and computes only the missing shards; without --resume the killed run's
// temporaries are removed and reported.
func TestResumeAfterKill(t *testing.T) {
	bin := buildWtool(t)
	dir := t.TempDir()
	args := []string{"merge", demoDir + "/mlp-a", demoDir + "/mlp-b", "--method", "slerp", "--t", "0.3", "--max-shard-size", "8kB"}
	// the same base name as the resumed output: the model card is headed by it
	whole := filepath.Join(dir, "whole", "out")
	os.Mkdir(filepath.Dir(whole), 0o755)
	if out, err := exec.Command(bin, append(args, "-o", whole, "-q")...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out := filepath.Join(dir, "out")
	kill := func() {
		cmd := exec.Command(bin, append(args, "-o", out, "-q")...)
		cmd.Env = append(os.Environ(), "WTOOL_TEST_KILL_AFTER_SHARDS=3")
		err := cmd.Run()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("the run was not killed: %v", err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatal("a killed run left an output")
		}
	}
	kill()
	stale, _ := filepath.Glob(filepath.Join(dir, ".out.tmp-*"))
	if len(stale) != 1 {
		t.Fatalf("temporaries %v", stale)
	}
	shards, _ := filepath.Glob(filepath.Join(stale[0], "model-*.safetensors"))
	if len(shards) != 3 {
		t.Fatalf("%d completed shards in the killed run's directory", len(shards))
	}
	res, err := exec.Command(bin, append(args, "-o", out, "--resume")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, res)
	}
	if !strings.Contains(string(res), "3 of") {
		t.Errorf("no resume reported: %s", res)
	}
	if !sameTree(t, whole, out) {
		t.Error("the resumed output differs from an uninterrupted run")
	}
	// killed again, then run without --resume: cleaned and reported
	os.RemoveAll(out)
	kill()
	res, err = exec.Command(bin, append(args, "-o", out)...).CombinedOutput()
	if err != nil || !strings.Contains(string(res), "left by an interrupted run") {
		t.Errorf("%v: %s", err, res)
	}
	if !sameTree(t, whole, out) {
		t.Error("the output differs from an uninterrupted run")
	}
	if left := leftoverTemps(dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
}

// TestSignalsEndWithinASecond: SIGINT during long work — parsing a huge
// header, weight matching, PLeaS, Fisher — ends the process within a
// second with exit 130 and nothing left behind; a FIFO given as an input
// is refused at once instead of blocking.
func TestSignalsEndWithinASecond(t *testing.T) {
	bin := buildWtool(t)
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.safetensors")
	writeHugeHeader(t, huge, 300_000)
	fifo := filepath.Join(dir, "fifo.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	a, b, calib := demoDir+"/mlp-a", demoDir+"/mlp-b", demoDir+"/digits_train.safetensors"
	long := []struct {
		name string
		args []string
	}{
		{"inspect of a huge header", []string{"inspect", huge}},
		{"inspect --json of a huge header", []string{"inspect", huge, "--json"}},
		{"weight matching", []string{"merge", a, b, "-o", filepath.Join(dir, "wm"), "--method", "wm", "--restarts", "100000"}},
		{"align", []string{"align", a, b, "-o", filepath.Join(dir, "al"), "--restarts", "100000"}},
		{"pleas", []string{"merge", a, b, "-o", filepath.Join(dir, "pl"), "--method", "pleas", "--calib", calib, "--match", "weight", "--restarts", "100000"}},
	}
	for _, tc := range long {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append(tc.args, "-q")...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(400 * time.Millisecond)
			sent := time.Now()
			cmd.Process.Signal(os.Interrupt)
			err := cmd.Wait()
			took := time.Since(sent)
			code := cmd.ProcessState.ExitCode()
			if code != exitInterrupted {
				t.Errorf("exit %d (%v), stderr %q", code, err, stderr.String())
			}
			t.Logf("stopped %v after SIGINT", took)
			if took > time.Second {
				t.Errorf("took %v to stop", took)
			}
		})
	}
	for _, args := range [][]string{
		{"inspect", fifo},
		{"convert", fifo, "-o", filepath.Join(dir, "c")},
		{"stats", a, "--calib", fifo, "-o", filepath.Join(dir, "s.safetensors")},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if timedOut || err == nil || !strings.Contains(string(out), "named pipe") {
			t.Errorf("%v: %v, %s", args, err, out)
		}
	}
	if left := leftoverTemps(dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
	for _, p := range []string{"wm", "al", "pl"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err == nil {
			t.Errorf("output %s written", p)
		}
	}
}

// writeHugeHeader writes a valid safetensors file of n one-element tensors.
func writeHugeHeader(t *testing.T, path string, n int) {
	t.Helper()
	var h bytes.Buffer
	h.WriteByte('{')
	for i := range n {
		if i > 0 {
			h.WriteByte(',')
		}
		fmt.Fprintf(&h, `"model.layers.%d.t%d.weight":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]}`, i/1000, i, 4*i, 4*i+4)
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var prefix [8]byte
	for i := range 8 {
		prefix[i] = byte(uint64(h.Len()) >> (8 * i))
	}
	f.Write(prefix[:])
	f.Write(h.Bytes())
	f.Write(make([]byte, 4*n))
}

// fastTempDir is a temporary directory in memory (/dev/shm) when there is
// one: tests that write many small outputs spend their time in fsync.
func fastTempDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "wtool-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// TestInternalErrorExitCode: a panic (a bug) exits 70 with a message that
// asks for a report, never 2 (a bad command line).
func TestInternalErrorExitCode(t *testing.T) {
	var b bytes.Buffer
	pe := &fault.PanicError{Value: "boom", Stack: []byte("goroutine 1 [running]:\n")}
	if code := report(context.Background(), fmt.Errorf("tensor %q: %w", "x", pe), &b); code != exitInternal || !strings.Contains(b.String(), "bug") || !strings.Contains(b.String(), "goroutine 1") {
		t.Errorf("exit %d, %q", code, b.String())
	}
}
