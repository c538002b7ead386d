// Copyright ©2025 The wtool Authors.

//go:build openblas && cgo

// This file replaces use.go when the program is built with the "openblas"
// build tag (and cgo enabled): instead of this package's kernels, gonum's
// BLAS (blas32, blas64) and LAPACK (lapack64) are routed through
// gonum.org/v1/netlib to the system OpenBLAS and LAPACKE, as in
//
//	go test -tags openblas ./...
//
// It needs cgo and the C libraries and headers (Debian: libopenblas-dev and
// liblapacke-dev). This package contains Go assembly and so cannot use cgo
// itself; the link flags (#cgo LDFLAGS: -lopenblas -llapacke) come from the
// tiny cgo package github.com/wtool/wtool/tensors/linalg/openblaslink imported
// below, so every program importing this package links without further
// settings. Other libraries providing the CBLAS and LAPACKE interfaces can
// be added with CGO_LDFLAGS (for example CGO_LDFLAGS="-L/opt/OpenBLAS/lib").
//
// Threads: openblaslink caps OpenBLAS's thread count at GOMAXPROCS at
// start-up (with openblas_set_num_threads); OPENBLAS_NUM_THREADS, read when
// the library is loaded, can lower it further. Calls into OpenBLAS from
// several goroutines at once are safe but compete for the same cores.
//
// With the openblas tag but without cgo (CGO_ENABLED=0) neither this file nor
// use.go is compiled and gonum keeps its own pure-Go BLAS and LAPACK.

package linalg

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack/lapack64"
	blasnetlib "gonum.org/v1/netlib/blas/netlib"
	lapacknetlib "gonum.org/v1/netlib/lapack/netlib"

	// Link flags for OpenBLAS and LAPACKE, and the thread cap.
	_ "github.com/wtool/wtool/tensors/linalg/openblaslink"
)

// init installs OpenBLAS (through gonum.org/v1/netlib) as gonum's float32
// and float64 BLAS and LAPACKE as gonum's float64 LAPACK.
func init() {
	blas32.Use(blasnetlib.Implementation{})
	blas64.Use(blasnetlib.Implementation{})
	lapack64.Use(lapacknetlib.Implementation{})
}
