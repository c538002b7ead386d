// Package tools holds wtool's helper scripts; this test runs their Python
// unit tests as part of `go test ./...`.
package tools

import (
	"os"
	"os/exec"
	"testing"
)

func TestPythonCollectorUnitTests(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		if os.Getenv("WTOOL_REQUIRE_PYTHON") != "" {
			t.Fatalf("%s with torch and numpy is required: %v", py, err)
		}
		t.Skipf("%s with torch and numpy not available: %v", py, err)
	}
	cmd := exec.Command(py, "-B", "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python unit tests failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
