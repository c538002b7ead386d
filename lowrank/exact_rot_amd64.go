// Copyright ©2025 The wtool Authors.

//go:build amd64 && !purego && (!openblas || !cgo)

package lowrank

import "golang.org/x/sys/cpu"

// haveRotFMA reports whether rotRowsFMA can run on this CPU.
var haveRotFMA = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// rotRowsFMA sets x, y = c·x + s·y, c·y - s·x over the first len(x)
// elements; len(x) must be a multiple of 4 and len(y) >= len(x).
//
//go:noescape
func rotRowsFMA(x, y []float64, c, s float64)
