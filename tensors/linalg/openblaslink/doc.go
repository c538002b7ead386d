// Package openblaslink links OpenBLAS and LAPACKE into programs built with
// the "openblas" build tag (and cgo), and caps OpenBLAS's thread count at
// GOMAXPROCS when it is loaded.
//
// It exists because github.com/wtool/wtool/tensors/linalg, which installs
// OpenBLAS as gonum's BLAS and LAPACKE as gonum's LAPACK under that tag,
// contains Go assembly and so cannot use cgo itself; it imports this package
// for the "#cgo LDFLAGS: -lopenblas -llapacke" that gonum.org/v1/netlib
// needs. Without the tag (or without cgo) the package is empty.
//
// To link other libraries providing the CBLAS and LAPACKE interfaces, add
// them with CGO_LDFLAGS (for example CGO_LDFLAGS="-L/opt/OpenBLAS/lib");
// the flags below are always passed as well.
package openblaslink
