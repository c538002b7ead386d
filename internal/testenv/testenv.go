// Package testenv holds helpers shared by wtool's tests.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Python returns the interpreter that has PyTorch and numpy (Debian's
// /usr/bin/python3 with python3-torch and python3-numpy), or skips the test
// when there is none — fails it instead when WTOOL_REQUIRE_PYTHON is set, as
// CI does, so that the comparisons with PyTorch cannot silently not run.
func Python(t testing.TB) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("WTOOL_REQUIRE_PYTHON") != "" {
			t.Fatalf("%s with torch and numpy is required: %v", py, err)
		}
		t.Skipf("%s with torch and numpy not available: %v", py, err)
	}
	return py
}
