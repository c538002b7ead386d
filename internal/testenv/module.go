package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// PythonWith is Python for tests that need only some modules (for instance
// "yaml"): it checks that /usr/bin/python3 imports them, without the cost of
// importing torch. It skips the test when they are missing, or fails it
// under WTOOL_REQUIRE_PYTHON, as Python does.
func PythonWith(t testing.TB, modules ...string) string {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import "+strings.Join(modules, ", ")).Run(); err != nil {
		if os.Getenv("WTOOL_REQUIRE_PYTHON") != "" {
			t.Fatalf("%s with %s is required: %v", py, strings.Join(modules, ", "), err)
		}
		t.Skipf("%s with %s not available: %v", py, strings.Join(modules, ", "), err)
	}
	return py
}
