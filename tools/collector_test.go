// Package tools holds wtool's helper scripts; this test runs their Python
// unit tests as part of `go test ./...`.
package tools

import (
	"os/exec"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
)

func TestPythonCollectorUnitTests(t *testing.T) {
	py := testenv.Python(t)
	cmd := exec.Command(py, "-B", "-m", "unittest", "discover", "-s", ".", "-p", "test_*.py")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python unit tests failed: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
