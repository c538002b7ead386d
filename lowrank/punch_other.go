//go:build !linux

package lowrank

import "os"

// punchHole is a no-op where hole punching is not available.
func punchHole(*os.File, int64, int64) {}
