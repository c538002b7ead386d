// Copyright ©2025 The wtool Authors.

//go:build (!amd64 || purego) && (!openblas || !cgo)

package lowrank

// haveRotFMA reports whether rotRowsFMA can run on this platform.
const haveRotFMA = false

func rotRowsFMA(x, y []float64, c, s float64) { panic("lowrank: rotRowsFMA not available") }
