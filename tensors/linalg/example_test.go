// Copyright ©2025 The wtool Authors.

package linalg_test

import (
	"fmt"

	"gonum.org/v1/gonum/blas"

	"github.com/wtool/wtool/tensors/linalg"
)

func ExampleMatMul32() {
	// a is 2×3, b is 3×2, c = a·b is 2×2.
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{7, 8, 9, 10, 11, 12}
	c := make([]float32, 4)
	linalg.MatMul32(c, a, b, 2, 3, 2, false, false)
	fmt.Println(c)
	// Output: [58 64 139 154]
}

func ExampleImplementation_Sgemm() {
	// C = 2·Aᵀ·B + C with A stored 3×2 (so op(A) = Aᵀ is 2×3).
	a := []float32{1, 4, 2, 5, 3, 6}
	b := []float32{7, 8, 9, 10, 11, 12}
	c := []float32{1, 1, 1, 1}
	linalg.Implementation{}.Sgemm(blas.Trans, blas.NoTrans, 2, 2, 3, 2, a, 2, b, 2, 1, c, 2)
	fmt.Println(c)
	// Output: [117 129 279 309]
}
