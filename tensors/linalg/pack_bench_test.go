// Copyright ©2025 The wtool Authors.

package linalg

import (
	"fmt"
	"testing"
)

// BenchmarkPack measures the packing routines on a square float32 matrix
// stored with leading dimension n, packed block by block as the driver does.
// The reported ns/elem is per element of the matrix.
func BenchmarkPack(b *testing.B) {
	cfg := cfg32
	if cfg == nil {
		b.Skip("no blocked float32 implementation on this machine")
	}
	for _, n := range []int{1024, 4096} {
		a := make([]float32, n*n)
		for i := range a {
			a[i] = float32(i)
		}
		for _, trans := range []bool{false, true} {
			b.Run(fmt.Sprintf("A/trans=%v/%d", trans, n), func(b *testing.B) {
				dst := make([]float32, cfg.mc/cfg.mr*panelStride[float32](cfg.mr, cfg.kc))
				for b.Loop() {
					for ic := 0; ic < n; ic += cfg.mc {
						for pc := 0; pc < n; pc += cfg.kc {
							cfg.packA(dst, a, n, trans, ic, pc, min(cfg.mc, n-ic), min(cfg.kc, n-pc), 1)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*n), "ns/elem")
			})
			b.Run(fmt.Sprintf("B/trans=%v/%d", trans, n), func(b *testing.B) {
				dst := make([]float32, cfg.nc/cfg.nr*panelStride[float32](cfg.nr, cfg.kc))
				for b.Loop() {
					for jc := 0; jc < n; jc += cfg.nc {
						for pc := 0; pc < n; pc += cfg.kc {
							cfg.packB(dst, a, n, trans, pc, jc, min(cfg.kc, n-pc), min(cfg.nc, n-jc))
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*n), "ns/elem")
			})
		}
	}
}
