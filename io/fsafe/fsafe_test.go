package fsafe

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func mkfile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesSpecialFilesWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan error, 3)
	go func() { _, err := Open(fifo); done <- err }()
	go func() { _, err := ReadFile(fifo); done <- err }()
	go func() { _, err := StatInput(fifo); done <- err }()
	for range 3 {
		select {
		case err := <-done:
			var k *KindError
			if !errors.As(err, &k) || !strings.Contains(err.Error(), "named pipe") {
				t.Errorf("got %v, want a KindError about a FIFO", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("opening a FIFO blocked")
		}
	}
	if _, err := Open("/dev/null"); err == nil || !strings.Contains(err.Error(), "character device") {
		t.Errorf("/dev/null: %v", err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("a directory: %v", err)
	}
	var r Registry
	if err := r.Input("--calib", fifo); err == nil || !strings.Contains(err.Error(), "--calib") {
		t.Errorf("registry input FIFO: %v", err)
	}
}

// TestRegistryRefusesOutputsOverInputs points an output at an input in every
// way a path can reach it.
func TestRegistryRefusesOutputsOverInputs(t *testing.T) {
	root := t.TempDir()
	model := filepath.Join(root, "model")
	weights := filepath.Join(model, "model.safetensors")
	mkfile(t, weights, "weights")
	calib := filepath.Join(root, "data", "calib.safetensors")
	mkfile(t, calib, "calib")
	link := filepath.Join(root, "link-to-model")
	os.Symlink(model, link)
	fileLink := filepath.Join(root, "link-to-calib.safetensors")
	os.Symlink(calib, fileLink)
	hard := filepath.Join(root, "hard.safetensors")
	if err := os.Link(calib, hard); err != nil {
		t.Fatal(err)
	}
	bind := filepath.Join(root, "bind")
	os.Mkdir(bind, 0o755)
	bound := exec.Command("mount", "--bind", model, bind).Run() == nil
	if bound {
		defer exec.Command("umount", bind).Run()
	}
	cases := []struct {
		name, out, rel string
	}{
		{"same directory", model, "is"},
		{"same directory, other spelling", model + "/./", "is"},
		{"same file", weights, "is"},
		{"directory containing the input", root, "contains"},
		{"file inside the input directory", filepath.Join(model, "config.json"), "inside"},
		{"new directory inside the input", filepath.Join(model, "sub", "out"), "inside"},
		{"symlink to the input directory", link, "is"},
		{"through a symlinked directory", filepath.Join(link, "model.safetensors"), "is"},
		{"symlink to an input file", fileLink, "is"},
		{"hard link of an input file", hard, "is"},
		{"auxiliary input", calib, "is"},
		{"directory of an auxiliary input", filepath.Dir(calib), "contains"},
	}
	if bound {
		cases = append(cases,
			struct{ name, out, rel string }{"bind mount of the input directory", bind, "is"},
			struct{ name, out, rel string }{"file through a bind mount", filepath.Join(bind, "model.safetensors"), "is"})
	} else {
		t.Log("no bind mount (not root, or no mount permission): that case is skipped")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := Registry{Force: true}
			if err := r.Input("MODEL", model); err != nil {
				t.Fatal(err)
			}
			if err := r.Input("--calib", calib); err != nil {
				t.Fatal(err)
			}
			r.Output("-o", tc.out)
			_, err := r.Check()
			var ce *ConflictError
			if !errors.As(err, &ce) || !strings.Contains(ce.Relation, tc.rel) {
				t.Fatalf("got %v, want a conflict (%s)", err, tc.rel)
			}
			if err := CheckOutput(tc.out, []string{model, calib}, true); err == nil {
				t.Error("CheckOutput accepted it")
			}
		})
	}
	// unrelated outputs pass; an existing one needs Force
	r := Registry{}
	r.Input("MODEL", model)
	r.Output("-o", filepath.Join(root, "out"))
	r.Output("--plot", filepath.Join(root, "plot.png"))
	if _, err := r.Check(); err != nil {
		t.Errorf("unrelated outputs: %v", err)
	}
	r = Registry{}
	r.Input("MODEL", model)
	r.Output("-o", calib+".copy")
	mkfile(t, calib+".copy", "x")
	var ee *ExistsError
	if _, err := r.Check(); !errors.As(err, &ee) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("existing output: %v", err)
	}
	// two outputs may not overlap
	r = Registry{Force: true}
	r.Output("-o", filepath.Join(root, "o"))
	r.Output("--save-perm", filepath.Join(root, "o", "perm.safetensors"))
	if _, err := r.Check(); err == nil || !strings.Contains(err.Error(), "overlap") {
		t.Errorf("nested outputs: %v", err)
	}
	// a device as output
	r = Registry{Force: true}
	r.Output("-o", "/dev/null")
	if _, err := r.Check(); err == nil || !strings.Contains(err.Error(), "character device") {
		t.Errorf("/dev/null: %v", err)
	}
	// the working directory as output
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(filepath.Join(root, "data"))
	for _, o := range []string{".", "..", filepath.Join(root, "data")} {
		r = Registry{Force: true}
		r.Output("-o", o)
		if _, err := r.Check(); err == nil || !strings.Contains(err.Error(), "current directory") {
			t.Errorf("-o %s: %v", o, err)
		}
	}
	// the inputs are untouched
	for p, want := range map[string]string{weights: "weights", calib: "calib"} {
		if b, _ := os.ReadFile(p); string(b) != want {
			t.Errorf("%s changed", p)
		}
	}
}

func TestCommitFileAndDirectory(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "a.bin")
	if err := WriteFile(out, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	var ee *ExistsError
	if err := WriteFile(out, []byte("two"), false); !errors.As(err, &ee) {
		t.Errorf("no force: %v", err)
	}
	if err := WriteFile(out, []byte("two"), true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "two" {
		t.Errorf("content %q", b)
	}
	// a directory replacing a directory, and a file
	for _, existing := range []string{"dir", "file"} {
		for _, fallback := range []bool{false, true} {
			dest := filepath.Join(dir, "out-"+existing)
			os.RemoveAll(dest)
			if existing == "dir" {
				mkfile(t, filepath.Join(dest, "old"), "old")
			} else {
				mkfile(t, dest, "old")
			}
			if fallback {
				exchangeHook = func(string, string) error { return errUnsupported }
			}
			d, err := CreateDir(dest, false)
			if err != nil {
				t.Fatal(err)
			}
			mkfile(t, filepath.Join(d.Path, "new"), "new")
			if err := d.Commit(); !errors.As(err, &ee) {
				t.Errorf("no force: %v", err)
			}
			d, _ = CreateDir(dest, true)
			mkfile(t, filepath.Join(d.Path, "new"), "new")
			if err := d.Commit(); err != nil {
				t.Fatal(err)
			}
			exchangeHook = exchange
			if b, _ := os.ReadFile(filepath.Join(dest, "new")); string(b) != "new" {
				t.Errorf("%s fallback=%v: not replaced", existing, fallback)
			}
			if _, err := os.Stat(filepath.Join(dest, "old")); err == nil {
				t.Errorf("%s fallback=%v: old content still there", existing, fallback)
			}
		}
	}
	if left := temps(t, dir); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
}

func temps(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestStaleTemporaries: temporaries no live process holds are removed and
// reported; a live one is left alone; a destination that a killed
// replacement left missing is restored.
func TestStaleTemporaries(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	mkfile(t, filepath.Join(dir, ".out.tmp-123", "model-00001-of-00002.safetensors"), "partial")
	mkfile(t, filepath.Join(dir, ".out.tmp-456"), "partial file")
	mkfile(t, filepath.Join(dir, ".other.tmp-1"), "not ours")
	live, err := CreateDir(out, false)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := StaleTemps(out)
	if err != nil || len(stale) != 2 {
		t.Fatalf("stale %v, %v", stale, err)
	}
	notes, err := CleanStale(out, false)
	if err != nil || len(notes) != 2 || !strings.Contains(notes[0], "interrupted") {
		t.Fatalf("notes %v, %v", notes, err)
	}
	if _, err := os.Stat(live.Path); err != nil {
		t.Error("the live temporary was removed")
	}
	if _, err := os.Stat(filepath.Join(dir, ".other.tmp-1")); err != nil {
		t.Error("another output's temporary was removed")
	}
	live.Abort()
	// a replacement killed between its two renames (no RENAME_EXCHANGE)
	mkfile(t, filepath.Join(dir, ".out.tmp-789.old", "model.safetensors"), "old output")
	mkfile(t, filepath.Join(dir, ".out.tmp-789", "model.safetensors"), "new output")
	notes, err = CleanStale(out, false)
	if err != nil || len(notes) != 2 || !strings.Contains(notes[0], "restored") {
		t.Fatalf("notes %v, %v", notes, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "model.safetensors")); string(b) != "old output" {
		t.Errorf("not restored: %q", b)
	}
	if left := temps(t, dir); len(left) != 1 { // .other.tmp-1
		t.Errorf("left: %v", left)
	}
}

func TestRemoveLiveTempsKeepsResumable(t *testing.T) {
	// run in a child: RemoveLiveTemps locks the commit mutex for good
	if os.Getenv("FSAFE_CHILD") == "1" {
		dir := os.Getenv("FSAFE_DIR")
		a, _ := CreateDir(filepath.Join(dir, "a"), false)
		b, _ := CreateDir(filepath.Join(dir, "b"), false)
		b.Resumable()
		f, _ := CreateFile(filepath.Join(dir, "c.safetensors"), false)
		_, _ = a, f
		RemoveLiveTemps()
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestRemoveLiveTempsKeepsResumable$")
	cmd.Env = append(os.Environ(), "FSAFE_CHILD=1", "FSAFE_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	left := temps(t, dir)
	if len(left) != 1 || !strings.Contains(left[0], ".b.tmp-") {
		t.Errorf("left %v, want only b's resumable temporary", left)
	}
}

// TestResumableDirSurvivesAFailedCommit: a resumable temporary directory
// whose commit fails (the destination appeared, no force) is kept.
func TestResumableDirSurvivesAFailedCommit(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "out")
	d, err := CreateDir(dest, false)
	if err != nil {
		t.Fatal(err)
	}
	d.Resumable()
	mkfile(t, filepath.Join(d.Path, "shard"), "work")
	mkfile(t, filepath.Join(dest, "other"), "someone else's")
	var ee *ExistsError
	if err := d.Commit(); !errors.As(err, &ee) {
		t.Fatalf("got %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(d.Path, "shard")); string(b) != "work" {
		t.Error("the resumable directory was removed")
	}
}
