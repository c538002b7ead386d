// Copyright ©2025 The wtool Authors.

//go:build race

package linalg

// raceEnabled reports whether the race detector is on; the slowest
// reference checks are reduced then.
const raceEnabled = true
