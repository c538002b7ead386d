// Copyright ©2025 The wtool Authors.

//go:build openblas && cgo

package lowrank

import (
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	blasnetlib "gonum.org/v1/netlib/blas/netlib"

	"github.com/wtool/wtool/tensors/linalg/openblaslink"
)

// TestOpenBLASInstalled checks that the openblas build routes gonum's BLAS
// to OpenBLAS (lapack64 has no getter to check) and caps its threads at GOMAXPROCS (as set when
// the package was initialised).
func TestOpenBLASInstalled(t *testing.T) {
	if _, ok := blas32.Implementation().(blasnetlib.Implementation); !ok {
		t.Errorf("blas32 implementation is %T", blas32.Implementation())
	}
	if _, ok := blas64.Implementation().(blasnetlib.Implementation); !ok {
		t.Errorf("blas64 implementation is %T", blas64.Implementation())
	}
	if n, procs := openblaslink.Threads(), runtime.GOMAXPROCS(0); n < 1 || n > procs {
		t.Errorf("OpenBLAS uses %d threads, GOMAXPROCS is %d", n, procs)
	}
}
