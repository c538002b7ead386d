package lap

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// The reference values in this file were computed with
// scipy.optimize.linear_sum_assignment (scipy 1.10.1, numpy 1.24.2) by
// testdata/gen_reference.py, which also wrote the matrices in testdata.
// For the two float matrices the script checked that the optimal
// assignment is unique (forbidding any of its pairs makes the optimum
// strictly worse), so the assignments are compared too.

func loadF64(t *testing.T, name string, n int) []float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 8*n {
		t.Fatalf("%s: %d bytes, want %d", name, len(raw), 8*n)
	}
	c := make([]float64, n)
	for k := range c {
		c[k] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*k:]))
	}
	return c
}

func transposed(c []float64, rows, cols int) []float64 {
	out := make([]float64, len(c))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = c[i*cols+j]
		}
	}
	return out
}

func TestReferenceMatrices(t *testing.T) {
	cases := []struct {
		name       string
		file       string
		rows, cols int  // of the matrix solved
		transpose  bool // solve the transpose of the file's matrix
		maximize   bool
		cost       float64
		rowToCol   []int // scipy's col_ind, when rows <= cols
		colToRow   []int // when rows > cols: colToRow[j] = row assigned to column j
	}{
		{name: "wm128", file: "wm128.f64", rows: 128, cols: 128, transpose: false, maximize: false, cost: -2438.7673280226745,
			rowToCol: []int{
				115, 35, 122, 87, 26, 22, 67, 15, 16, 108, 6, 28, 78, 20, 8, 57, 119, 64, 51, 45, 31, 106, 118,
				88, 71, 90, 24, 65, 112, 7, 61, 54, 70, 34, 91, 85, 77, 73, 58, 14, 101, 5, 21, 9, 29, 49, 69,
				75, 104, 59, 79, 56, 19, 48, 42, 40, 66, 17, 50, 38, 52, 109, 94, 105, 63, 103, 116, 53, 44, 82,
				81, 86, 0, 2, 126, 98, 97, 123, 47, 3, 37, 96, 127, 60, 33, 25, 55, 10, 92, 111, 11, 74, 102,
				110, 113, 13, 41, 23, 83, 100, 95, 18, 84, 99, 39, 107, 30, 62, 27, 12, 120, 36, 32, 121, 125,
				80, 93, 46, 76, 72, 1, 43, 4, 124, 117, 89, 114, 68,
			}},
		{name: "unif96x160", file: "unif96x160.f64", rows: 96, cols: 160, transpose: false, maximize: false, cost: 0.6401147323558409,
			rowToCol: []int{
				130, 88, 51, 95, 67, 52, 143, 129, 110, 85, 26, 151, 48, 1, 14, 156, 100, 15, 6, 44, 146, 12,
				60, 127, 37, 108, 69, 87, 74, 80, 50, 124, 148, 111, 41, 149, 96, 123, 152, 34, 81, 125, 2, 38,
				109, 147, 73, 47, 13, 64, 120, 23, 78, 39, 7, 10, 105, 141, 9, 83, 16, 136, 28, 19, 144, 45,
				131, 89, 40, 46, 157, 134, 98, 139, 137, 142, 29, 107, 77, 92, 115, 53, 106, 71, 158, 150, 114,
				79, 3, 112, 31, 121, 119, 99, 57, 63,
			}},
		{name: "unif96x160^T", file: "unif96x160.f64", rows: 160, cols: 96, transpose: true, maximize: false, cost: 0.6401147323558409,
			colToRow: []int{
				130, 88, 51, 95, 67, 52, 143, 129, 110, 85, 26, 151, 48, 1, 14, 156, 100, 15, 6, 44, 146, 12,
				60, 127, 37, 108, 69, 87, 74, 80, 50, 124, 148, 111, 41, 149, 96, 123, 152, 34, 81, 125, 2, 38,
				109, 147, 73, 47, 13, 64, 120, 23, 78, 39, 7, 10, 105, 141, 9, 83, 16, 136, 28, 19, 144, 45,
				131, 89, 40, 46, 157, 134, 98, 139, 137, 142, 29, 107, 77, 92, 115, 53, 106, 71, 158, 150, 114,
				79, 3, 112, 31, 121, 119, 99, 57, 63,
			}},
		{name: "wm128", file: "wm128.f64", rows: 128, cols: 128, transpose: false, maximize: true, cost: 4185.306828836918,
			rowToCol: []int{
				18, 72, 41, 5, 46, 43, 49, 36, 90, 30, 124, 70, 19, 9, 74, 96, 67, 65, 63, 40, 3, 126, 107, 71,
				0, 21, 60, 119, 121, 77, 2, 106, 79, 105, 47, 91, 52, 69, 100, 113, 111, 86, 29, 127, 81, 82,
				61, 59, 34, 75, 37, 58, 17, 50, 116, 24, 55, 87, 7, 93, 122, 6, 32, 16, 28, 84, 51, 44, 22, 95,
				92, 115, 20, 102, 39, 64, 109, 68, 104, 56, 89, 120, 99, 42, 80, 23, 110, 13, 101, 78, 25, 103,
				26, 14, 31, 62, 98, 123, 114, 33, 45, 83, 88, 76, 85, 35, 108, 57, 125, 4, 38, 12, 73, 112, 27,
				53, 1, 94, 54, 66, 97, 11, 117, 10, 118, 15, 8, 48,
			}},
		{name: "unif96x160", file: "unif96x160.f64", rows: 96, cols: 160, transpose: false, maximize: true, cost: 95.29352441240202,
			rowToCol: []int{
				131, 79, 32, 45, 36, 28, 18, 56, 27, 12, 51, 31, 138, 81, 110, 6, 158, 124, 4, 149, 139, 87, 33,
				85, 53, 65, 67, 19, 120, 42, 145, 9, 35, 102, 116, 76, 152, 99, 3, 44, 37, 34, 94, 41, 141, 107,
				52, 43, 98, 84, 11, 59, 123, 13, 63, 105, 40, 100, 50, 25, 78, 104, 155, 72, 66, 147, 71, 122,
				83, 38, 92, 112, 75, 91, 68, 23, 96, 106, 26, 54, 1, 108, 133, 46, 86, 159, 61, 136, 49, 0, 113,
				97, 24, 101, 93, 16,
			}},
		{name: "unif96x160^T", file: "unif96x160.f64", rows: 160, cols: 96, transpose: true, maximize: true, cost: 95.29352441240201,
			colToRow: []int{
				131, 79, 32, 45, 36, 28, 18, 56, 27, 12, 51, 31, 138, 81, 110, 6, 158, 124, 4, 149, 139, 87, 33,
				85, 53, 65, 67, 19, 120, 42, 145, 9, 35, 102, 116, 76, 152, 99, 3, 44, 37, 34, 94, 41, 141, 107,
				52, 43, 98, 84, 11, 59, 123, 13, 63, 105, 40, 100, 50, 25, 78, 104, 155, 72, 66, 147, 71, 122,
				83, 38, 92, 112, 75, 91, 68, 23, 96, 106, 26, 54, 1, 108, 133, 46, 86, 159, 61, 136, 49, 0, 113,
				97, 24, 101, 93, 16,
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, c := tc.rows, tc.cols
			if tc.transpose {
				r, c = c, r
			}
			m := loadF64(t, tc.file, r*c)
			if tc.transpose {
				m = transposed(m, r, c)
			}
			for _, mode := range solverModes() {
				a, err := mode.s.Solve(m, tc.rows, tc.cols, tc.maximize)
				if err != nil {
					t.Fatalf("%s: %v", mode.name, err)
				}
				if math.Abs(a.Cost-tc.cost) > 1e-9*math.Abs(tc.cost) {
					t.Fatalf("%s: cost %v, scipy %v", mode.name, a.Cost, tc.cost)
				}
				if tc.rowToCol != nil {
					for i, j := range tc.rowToCol {
						if a.RowToCol[i] != j {
							t.Fatalf("%s: row %d -> %d, scipy %d", mode.name, i, a.RowToCol[i], j)
						}
					}
				}
				if tc.colToRow != nil {
					for j, i := range tc.colToRow {
						if a.ColToRow[j] != i {
							t.Fatalf("%s: col %d <- %d, scipy %d", mode.name, j, a.ColToRow[j], i)
						}
					}
				}
				checkAssignment(t, m, tc.rows, tc.cols, tc.maximize, a, 1e-9*(1+math.Abs(tc.cost)))
			}
		})
	}
}

// formula is c_ij = (i*7919 + j*104729) mod 1000: integer costs with a
// great many ties.
func formula(rows, cols int) []float64 {
	c := make([]float64, rows*cols)
	for i := range rows {
		for j := range cols {
			c[i*cols+j] = float64((i*7919 + j*104729) % 1000)
		}
	}
	return c
}

// formula2 is c_ij = ((i+1)*(j+3)*31 + 7i^2 + j^3) mod 997.
func formula2(rows, cols int) []float64 {
	c := make([]float64, rows*cols)
	for i := range rows {
		for j := range cols {
			c[i*cols+j] = float64(((i+1)*(j+3)*31 + i*i*7 + j*j*j) % 997)
		}
	}
	return c
}

func TestReferenceFormulas(t *testing.T) {
	cases := []struct {
		name       string
		gen        func(rows, cols int) []float64
		rows, cols int
		maximize   bool
		cost       float64 // from scipy, see testdata/gen_reference.py
	}{
		{"formula", formula, 100, 100, false, 1600},
		{"formula", formula, 100, 100, true, 98600},
		{"formula", formula, 500, 500, false, 3000},
		{"formula", formula, 500, 500, true, 496000},
		{"formula2", formula2, 60, 90, false, 901},
		{"formula2", formula2, 60, 90, true, 59099},
		{"formula2", formula2, 90, 60, false, 905},
		{"formula2", formula2, 90, 60, true, 59017},
		{"formula2", formula2, 300, 200, false, 709},
		{"formula2", formula2, 300, 200, true, 198410},
	}
	for _, tc := range cases {
		m := tc.gen(tc.rows, tc.cols)
		for _, mode := range solverModes() {
			a, err := mode.s.Solve(m, tc.rows, tc.cols, tc.maximize)
			if err != nil {
				t.Fatalf("%s %dx%d %s: %v", tc.name, tc.rows, tc.cols, mode.name, err)
			}
			// Integer costs: the answer must be exact.
			if a.Cost != tc.cost {
				t.Fatalf("%s %dx%d max=%v %s: cost %v, scipy %v", tc.name, tc.rows, tc.cols, tc.maximize, mode.name, a.Cost, tc.cost)
			}
			checkAssignment(t, m, tc.rows, tc.cols, tc.maximize, a, 0)
		}
	}
}
