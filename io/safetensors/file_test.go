package safetensors

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	nlp "github.com/nlpodyssey/safetensors"

	"github.com/wtool/wtool/tensors"
)

const fixtures = "../../../shared/fixtures/real"

func fixture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(fixtures, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s not available: %v", name, err)
	}
	return p
}

// TestRealFixtures checks the files written by other implementations against
// what PROVENANCE.md says each must do.
func TestRealFixtures(t *testing.T) {
	samples := map[string]tensors.DType{
		"hf_sample_B.safetensors": tensors.U8, "hf_sample_b.safetensors": tensors.I8,
		"hf_sample_H.safetensors": tensors.U16, "hf_sample_h.safetensors": tensors.I16,
		"hf_sample_I.safetensors": tensors.U32, "hf_sample_i.safetensors": tensors.I32,
		"hf_sample_f.safetensors": tensors.F32, "hf_sample_d.safetensors": tensors.F64,
		"hf_sample_e.safetensors": tensors.F16,
	}
	for name, dt := range samples {
		t.Run(name, func(t *testing.T) {
			f, err := Open(fixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Header.Metadata["test"] != "a" {
				t.Errorf("metadata %v", f.Header.Metadata)
			}
			if len(f.Header.Tensors) != 1 || f.Header.Tensors[0].DType != dt {
				t.Fatalf("tensors %+v", f.Header.Tensors)
			}
			x, err := f.Tensor(f.Header.Tensors[0].Name)
			if err != nil {
				t.Fatal(err)
			}
			checkSampleValues(t, x)
		})
	}
	t.Run("hf_sample_overall", func(t *testing.T) {
		f, err := Open(fixture(t, "hf_sample_overall.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if len(f.Header.Tensors) != 9 {
			t.Fatalf("%d tensors", len(f.Header.Tensors))
		}
		unaligned := false
		for _, info := range f.Header.Tensors {
			x, err := f.Tensor(info.Name)
			if err != nil {
				t.Fatal(err)
			}
			if info.DType == tensors.F64 && (f.Header.DataOffset+info.Begin)%8 != 0 {
				unaligned = true
			}
			checkSampleValues(t, x)
		}
		if !unaligned {
			t.Error("expected the F64 data at an unaligned offset in this fixture")
		}
	})
	t.Run("syoyo_model", func(t *testing.T) {
		f, err := Open(fixture(t, "syoyo_model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var shapes [][]int64
		for _, info := range f.Header.Tensors {
			if info.DType != tensors.F64 {
				t.Errorf("%s: %s", info.Name, info.DType)
			}
			shapes = append(shapes, info.Shape)
		}
		slices.SortFunc(shapes, func(a, b []int64) int { return int(a[0] - b[0]) })
		if len(shapes) != 2 || !slices.Equal(shapes[0], []int64{8, 8}) || !slices.Equal(shapes[1], []int64{16, 16}) {
			t.Errorf("shapes %v", shapes)
		}
	})
	t.Run("syoyo_abuse1", func(t *testing.T) {
		_, err := Open(fixture(t, "syoyo_abuse1.safetensors"))
		if !errors.Is(err, ErrInvalidHeaderLength) {
			t.Fatalf("got %v, want ErrInvalidHeaderLength", err)
		}
	})
	t.Run("burn_multi_layer", func(t *testing.T) {
		f, err := Open(fixture(t, "burn_multi_layer.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		scalars := 0
		for _, info := range f.Header.Tensors {
			if len(info.Shape) == 0 {
				scalars++
				if info.NumElements() != 1 || info.Size() != int64(info.DType.Bits()/8) {
					t.Errorf("scalar %s: %d elements, %d bytes", info.Name, info.NumElements(), info.Size())
				}
				x, err := f.Tensor(info.Name)
				if err != nil || len(x.Data) != 8 || x.NumElements() != 1 {
					t.Errorf("scalar view: %v %v", x, err)
				}
			}
		}
		if scalars == 0 {
			t.Error("no scalar tensor found")
		}
	})
	t.Run("burn_mnist", func(t *testing.T) {
		f, err := Open(fixture(t, "burn_mnist.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		found := false
		for _, info := range f.Header.Tensors {
			if slices.Equal(info.Shape, []int64{32, 11616}) {
				found = true
				x, _ := f.Tensor(info.Name)
				if _, r, c, err := x.Matrix(); err != nil || r != 32 || c != 11616 {
					t.Errorf("fc1 matrix %d x %d: %v", r, c, err)
				}
			}
			if len(info.Shape) == 4 {
				x, _ := f.Tensor(info.Name)
				if _, r, c, err := x.Matrix(); err != nil || int64(r) != info.Shape[0] || int64(c) != info.Shape[1]*info.Shape[2]*info.Shape[3] {
					t.Errorf("%s conv matrix %d x %d: %v", info.Name, r, c, err)
				}
			}
		}
		if !found {
			t.Error("fc1 [32, 11616] not found")
		}
	})
}

// checkSampleValues: the hf_sample files hold -3, -2, -1, 0, 1, 2 (unsigned
// types wrap).
func checkSampleValues(t *testing.T, x *tensors.Tensor) {
	t.Helper()
	want := []int64{-3, -2, -1, 0, 1, 2}
	if x.NumElements() != 6 {
		t.Fatalf("%s: %d elements", x.Name, x.NumElements())
	}
	var got []int64
	w := x.DType.Bits() / 8
	for i := range 6 {
		b := x.Data[i*w : (i+1)*w]
		switch x.DType {
		case tensors.U8, tensors.I8:
			got = append(got, int64(int8(b[0])))
		case tensors.U16, tensors.I16:
			got = append(got, int64(int16(le16(b))))
		case tensors.U32, tensors.I32:
			got = append(got, int64(int32(le32(b))))
		case tensors.F16, tensors.F32, tensors.F64:
			v, _ := x.Float64()
			got = append(got, int64(v[i]))
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s (%s): values %v, want %v", x.Name, x.DType, got, want)
	}
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 { return uint32(le16(b)) | uint32(le16(b[2:]))<<16 }

func TestEmptyFileGoldenBytes(t *testing.T) {
	var buf bytes.Buffer
	if err := Encode(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	golden := []byte{0x08, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0x7D, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20}
	if !bytes.Equal(buf.Bytes(), golden) {
		t.Fatalf("got % x, want % x", buf.Bytes(), golden)
	}
}

// referenceTensors loads the tensors and metadata of the file written by the
// reference writer, in a shuffled order.
func referenceTensors(t *testing.T) ([]byte, []*tensors.Tensor, map[string]string) {
	golden, err := os.ReadFile("testdata/reference_writer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(golden)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*tensors.Tensor
	for _, info := range h.Tensors {
		data := golden[h.DataOffset+info.Begin : h.DataOffset+info.End]
		ts = append(ts, &tensors.Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: data})
	}
	rand.New(rand.NewPCG(7, 8)).Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	return golden, ts, h.Metadata
}

func TestEncodeMatchesReferenceWriter(t *testing.T) {
	golden, ts, md := referenceTensors(t)
	var buf bytes.Buffer
	if err := Encode(&buf, ts, md); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), golden) {
		t.Fatalf("Encode differs from the reference writer's bytes\n got %q\nwant %q", buf.Bytes()[:200], golden[:200])
	}
}

func TestStreamingWriterMatchesReferenceWriter(t *testing.T) {
	golden, ts, md := referenceTensors(t)
	for _, bounded := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "out.safetensors")
		entries := make([]Entry, len(ts))
		byName := map[string]*tensors.Tensor{}
		for i, x := range ts {
			entries[i] = Entry{Name: x.Name, DType: x.DType, Shape: x.Shape}
			byName[x.Name] = x
		}
		if bounded {
			// declare one tensor with larger bounds than it will have
			for i := range entries {
				if entries[i].Name == "a" {
					entries[i] = Entry{Name: "a", DType: tensors.F32, Shape: []int64{5000}, Bounded: true}
				}
			}
		}
		// the reference file holds NaN and Inf on purpose
		w, err := CreateWith(path, entries, md, CreateOptions{AllowNonFinite: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range w.Order() {
			if err := w.Write(byName[e.Name]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if !bounded {
			if !bytes.Equal(got, golden) {
				t.Fatal("streaming writer differs from the reference writer")
			}
			continue
		}
		// bounded: same tensors and data, header longer (space padded)
		h, err := ParseHeader(got)
		if err != nil {
			t.Fatal(err)
		}
		gh, _ := ParseHeader(golden)
		if h.HeaderSize <= gh.HeaderSize || !bytes.Equal(got[h.DataOffset:], golden[gh.DataOffset:]) {
			t.Fatalf("bounded header %d bytes vs %d; data equal=%v", h.HeaderSize, gh.HeaderSize, bytes.Equal(got[h.DataOffset:], golden[gh.DataOffset:]))
		}
		for _, info := range gh.Tensors {
			bi, ok := h.Lookup(info.Name)
			if !ok || !slices.Equal(bi.Shape, info.Shape) || bi.Begin != info.Begin || bi.DType != info.DType {
				t.Errorf("%s: %+v vs %+v", info.Name, bi, info)
			}
		}
	}
}

func TestWriterFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.safetensors")
	os.WriteFile(path, []byte("previous contents"), 0o644)
	a, _ := tensors.New("a", tensors.F32, []int64{2})
	b, _ := tensors.New("b", tensors.F32, []int64{2})
	w, err := Create(path, []Entry{{Name: "a", DType: tensors.F32, Shape: []int64{2}}, {Name: "b", DType: tensors.F32, Shape: []int64{2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(b); err == nil {
		t.Fatal("writing out of order must fail")
	}
	if err := w.Write(a); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("closing with a tensor missing must fail")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if got, _ := os.ReadFile(path); string(got) != "previous contents" {
		t.Errorf("destination was modified: %q", got)
	}
	// Abort after some writes also leaves nothing.
	w, _ = Create(path, []Entry{{Name: "a", DType: tensors.F32, Shape: []int64{2}}}, nil)
	w.Write(a)
	w.Abort()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("Abort left files: %v", entries)
	}
}

func TestWriterRejects(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]Entry{
		"reserved name": {{Name: "__metadata__", DType: tensors.F32, Shape: []int64{1}}},
		"duplicate":     {{Name: "a", DType: tensors.F32, Shape: []int64{1}}, {Name: "a", DType: tensors.F32, Shape: []int64{1}}},
		"bad utf8":      {{Name: "a\xff", DType: tensors.F32, Shape: []int64{1}}},
		"odd F4":        {{Name: "a", DType: tensors.F4, Shape: []int64{3}}},
	}
	for name, entries := range cases {
		if _, err := Create(filepath.Join(dir, "x.safetensors"), entries, nil); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
}

// TestReadableByNlpodyssey cross-checks with an independent Go reader
// (github.com/nlpodyssey/safetensors) on the dtypes it knows.
func TestReadableByNlpodyssey(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	var ts []*tensors.Tensor
	for i, dt := range []tensors.DType{tensors.F32, tensors.BF16, tensors.F16, tensors.F64, tensors.I64, tensors.U8, tensors.BOOL, tensors.I32} {
		x, _ := tensors.New("t"+dt.String(), dt, []int64{int64(i + 1), 3})
		for j := range x.Data {
			x.Data[j] = byte(r.Uint32())
		}
		ts = append(ts, x)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, ts, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	st, err := nlp.Deserialize(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		v, ok := st.Tensor(x.Name)
		if !ok {
			t.Fatalf("%s missing", x.Name)
		}
		if v.DType().String() != x.DType.String() || !bytes.Equal(v.Data(), x.Data) {
			t.Errorf("%s: %s vs %s", x.Name, v.DType(), x.DType)
		}
		shape := make([]int64, len(v.Shape()))
		for i, d := range v.Shape() {
			shape[i] = int64(d)
		}
		if !slices.Equal(shape, x.Shape) {
			t.Errorf("%s: shape %v vs %v", x.Name, shape, x.Shape)
		}
	}
}

func TestReleaseKeepsViewsValid(t *testing.T) {
	x, _ := tensors.New("big", tensors.U8, []int64{3 << 16})
	for i := range x.Data {
		x.Data[i] = byte(i * 13)
	}
	path := filepath.Join(t.TempDir(), "r.safetensors")
	fh, _ := os.Create(path)
	Encode(fh, []*tensors.Tensor{x}, nil)
	fh.Close()
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, _ := f.Tensor("big")
	sum := 0
	for _, b := range v.Data {
		sum += int(b)
	}
	f.Release("big")
	sum2 := 0
	for _, b := range v.Data {
		sum2 += int(b)
	}
	if sum != sum2 || !bytes.Equal(v.Data, x.Data) {
		t.Fatal("data changed after Release")
	}
	buf := make([]byte, len(x.Data))
	if err := f.ReadTensor("big", buf); err != nil || !bytes.Equal(buf, x.Data) {
		t.Fatalf("ReadTensor: %v", err)
	}
	if _, err := f.Tensor("nope"); !errors.Is(err, ErrTensorNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
}
