package safetensors

import (
	"bytes"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// FuzzParseHeader feeds arbitrary files to the parser. It must never panic;
// a file it accepts must describe tensors inside the file, and re-encoding
// those tensors must give a file that parses to the same tensors.
func FuzzParseHeader(f *testing.F) {
	for _, tc := range conformanceCases() {
		f.Add(tc.file)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if h.FileSize() != int64(len(data)) {
			t.Fatalf("accepted a file of %d bytes whose header describes %d", len(data), h.FileSize())
		}
		var ts []*tensors.Tensor
		for _, info := range h.Tensors {
			if info.Begin < 0 || info.End > h.DataSize || info.End < info.Begin {
				t.Fatalf("tensor %q out of bounds", info.Name)
			}
			ts = append(ts, &tensors.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape,
				Data: data[h.DataOffset+info.Begin : h.DataOffset+info.End]})
		}
		var buf bytes.Buffer
		if err := Encode(&buf, ts, h.Metadata); err != nil {
			t.Fatalf("re-encoding an accepted file: %v", err)
		}
		h2, err := ParseHeader(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file does not parse: %v", err)
		}
		if len(h2.Tensors) != len(h.Tensors) || len(h2.Metadata) != len(h.Metadata) {
			t.Fatalf("re-encoded file differs")
		}
		for _, info := range h.Tensors {
			i2, ok := h2.Lookup(info.Name)
			if !ok || i2.DType != info.DType || i2.Size() != info.Size() {
				t.Fatalf("tensor %q differs after re-encoding", info.Name)
			}
			if !bytes.Equal(buf.Bytes()[h2.DataOffset+i2.Begin:h2.DataOffset+i2.End], data[h.DataOffset+info.Begin:h.DataOffset+info.End]) {
				t.Fatalf("tensor %q data differs after re-encoding", info.Name)
			}
		}
	})
}
