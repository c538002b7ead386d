// Copyright ©2025 The wtool Authors.

//go:build openblas && cgo

package main

// build names the BLAS/LAPACK configuration of this binary.
const build = "openblas"
