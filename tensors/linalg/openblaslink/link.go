//go:build openblas && cgo

package openblaslink

/*
#cgo LDFLAGS: -lopenblas -llapacke
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
*/
import "C"

import "runtime"

// init caps OpenBLAS's thread count at GOMAXPROCS (OpenBLAS starts one
// thread per CPU unless OPENBLAS_NUM_THREADS says otherwise).
func init() {
	if procs := runtime.GOMAXPROCS(0); Threads() > procs {
		C.openblas_set_num_threads(C.int(procs))
	}
}

// Threads returns the number of threads OpenBLAS currently uses.
func Threads() int { return int(C.openblas_get_num_threads()) }
