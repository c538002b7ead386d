package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Generated is a temporary directory of test inputs (tiny checkpoints a
// Python script writes, say) that the tests of a package share: the first
// test that needs it writes it, once per test binary, and the package's
// TestMain removes it.
type Generated struct {
	// Prefix starts the directory's name (os.MkdirTemp's pattern).
	Prefix string

	once sync.Once
	dir  string
	err  error
}

// Dir returns the directory, written by write on the first call. When the
// directory could not be made or written, it fails the test (and every
// later one asking for it).
func (g *Generated) Dir(t testing.TB, write func(dir string) error) string {
	t.Helper()
	g.once.Do(func() {
		if g.dir, g.err = os.MkdirTemp("", g.Prefix); g.err != nil {
			return
		}
		g.err = write(g.dir)
	})
	if g.err != nil {
		t.Fatal(g.err)
	}
	return g.dir
}

// Run runs the package's tests and removes the directory: the package's
// TestMain is os.Exit(g.Run(m)).
func (g *Generated) Run(m *testing.M) int {
	code := m.Run()
	g.Remove()
	return code
}

// Remove deletes the directory if a test made it.
func (g *Generated) Remove() {
	if g.dir != "" {
		os.RemoveAll(g.dir)
	}
}

// RunScript runs py -B script args...; its error names the script and
// holds the script's output.
func RunScript(py, script string, args ...string) error {
	out, err := exec.Command(py, append([]string{"-B", script}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", filepath.Base(script), err, out)
	}
	return nil
}
