package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerated: the directory is written once, by the first call, shared
// by the later ones, and removed by Remove.
func TestGenerated(t *testing.T) {
	g := Generated{Prefix: "wtool-testenv-"}
	writes := 0
	write := func(dir string) error {
		writes++
		return os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644)
	}
	d1, d2 := g.Dir(t, write), g.Dir(t, write)
	if d1 != d2 || writes != 1 {
		t.Fatalf("dirs %q and %q, %d writes; want one directory written once", d1, d2, writes)
	}
	if _, err := os.Stat(filepath.Join(d1, "x")); err != nil {
		t.Fatal(err)
	}
	g.Remove()
	if _, err := os.Stat(d1); !os.IsNotExist(err) {
		t.Errorf("after Remove: %v, want the directory gone", err)
	}
}

// TestRunScript: a failing script's error names it and holds its output.
func TestRunScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	script := filepath.Join(t.TempDir(), "fail.sh")
	if err := os.WriteFile(script, []byte("echo broken; exit 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// a stand-in for python that drops the -B RunScript passes
	wrapper := filepath.Join(t.TempDir(), "py")
	if err := os.WriteFile(wrapper, []byte("#!"+sh+"\nshift\nexec "+sh+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	err = RunScript(wrapper, script)
	if err == nil || !strings.HasPrefix(err.Error(), "fail.sh: exit status 3\n") || !strings.Contains(err.Error(), "broken") {
		t.Errorf("error %q, want fail.sh: exit status 3 and the output", err)
	}
}
