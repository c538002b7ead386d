// Copyright ©2025 The wtool Authors.

//go:build !openblas

package linalg

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// init installs Implementation as gonum's float32 and float64 BLAS; see the
// package documentation.
func init() {
	blas32.Use(Implementation{})
	blas64.Use(Implementation{})
}
