package safetensors_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.safetensors")

	// Write: declare the tensors, then stream them in the writer's order.
	w1, _ := tensors.FromFloat32("fc1.weight", tensors.BF16, []int64{2, 2}, []float32{2.25, 1, 1, 1})
	b1, _ := tensors.FromFloat32("fc1.bias", tensors.F32, []int64{2}, []float32{0.5, -0.5})
	byName := map[string]*tensors.Tensor{w1.Name: w1, b1.Name: b1}
	w, err := safetensors.Create(path, []safetensors.Entry{
		{Name: w1.Name, DType: w1.DType, Shape: w1.Shape},
		{Name: b1.Name, DType: b1.DType, Shape: b1.Shape},
	}, map[string]string{"format": "pt"})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range w.Order() {
		w.Write(byName[e.Name])
	}
	if err := w.Close(); err != nil {
		fmt.Println(err)
		return
	}

	// Read: header only, then a zero-copy view of one tensor.
	h, _ := safetensors.ReadHeaderFile(path)
	for _, t := range h.Tensors {
		fmt.Println(t.Name, t.DType, t.Shape, t.Begin, t.End)
	}
	f, _ := safetensors.Open(path)
	defer f.Close()
	x, _ := f.Tensor("fc1.weight")
	fmt.Printf("% x\n", x.Data)

	// A damaged file gives a typed error naming the file.
	_, err = safetensors.ParseHeader(append([]byte{0xe8, 3, 0, 0, 0, 0, 0, 0}, bytes.Repeat([]byte{' '}, 80)...))
	fmt.Println(err)
	// Output:
	// fc1.bias F32 [2] 0 8
	// fc1.weight BF16 [2 2] 8 16
	// 10 40 80 3f 80 3f 80 3f
	// invalid header length: declared header of 1000 bytes runs past the end of a 88-byte file
}
