package checkpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// testTensors returns a small model's tensors: float weights of several
// dtypes, an integer buffer, an FP8 tensor and a scalar.
func testTensors(t *testing.T) []*tensors.Tensor {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 1))
	var ts []*tensors.Tensor
	for i := range 3 {
		vals := make([]float32, 64*32)
		for j := range vals {
			vals[j] = float32(r.NormFloat64())
		}
		w, _ := tensors.FromFloat32(fmt.Sprintf("model.layers.%d.mlp.weight", i), tensors.F32, []int64{64, 32}, vals)
		b, _ := tensors.FromFloat32(fmt.Sprintf("model.layers.%d.mlp.bias", i), tensors.BF16, []int64{64}, vals[:64])
		ts = append(ts, w, b)
	}
	ids, _ := tensors.New("position_ids", tensors.I64, []int64{1, 16})
	for i := range ids.Data {
		ids.Data[i] = byte(i)
	}
	fp8, _ := tensors.New("scale.fp8", tensors.F8_E4M3, []int64{8})
	copy(fp8.Data, []byte{0x38, 0xb8, 0x7e, 0x00, 0x01, 0x7f, 0xff, 0x40})
	step, _ := tensors.New("step", tensors.I64, []int64{})
	h, _ := tensors.FromFloat32("norm.weight", tensors.F16, []int64{32}, make([]float32, 32))
	return append(ts, ids, fp8, step, h)
}

func writeFile(t *testing.T, path string, ts []*tensors.Tensor, md map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, md); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeSharded writes ts as a Hugging Face sharded model in dir, shard i
// holding the tensors for which assign returns i, with the given shard names.
func writeSharded(t *testing.T, dir string, ts []*tensors.Tensor, shardNames []string, assign func(i int) int) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	groups := make([][]*tensors.Tensor, len(shardNames))
	wm := map[string]string{}
	var total int64
	for i, x := range ts {
		s := assign(i)
		groups[s] = append(groups[s], x)
		wm[x.Name] = shardNames[s]
		total += int64(len(x.Data))
	}
	for s, g := range groups {
		writeFile(t, filepath.Join(dir, shardNames[s]), g, map[string]string{"format": "pt"})
	}
	ix, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": wm}, "", "  ")
	os.WriteFile(filepath.Join(dir, IndexFileName), ix, 0o644)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"test"}`), 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte(`stale`), 0o644)
	os.WriteFile(filepath.Join(dir, ".gitattributes"), []byte(`*`), 0o644)
}

func byName(ts []*tensors.Tensor) map[string]*tensors.Tensor {
	m := map[string]*tensors.Tensor{}
	for _, x := range ts {
		m[x.Name] = x
	}
	return m
}

func TestOpenLayouts(t *testing.T) {
	ts := testTensors(t)
	want := byName(ts)
	root := t.TempDir()
	single := filepath.Join(root, "single.safetensors")
	writeFile(t, single, ts, nil)
	hfSingle := filepath.Join(root, "hfsingle")
	os.MkdirAll(hfSingle, 0o755)
	writeFile(t, filepath.Join(hfSingle, "model.safetensors"), ts, map[string]string{"format": "pt"})
	sharded := filepath.Join(root, "sharded")
	writeSharded(t, sharded, ts, []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}, func(i int) int { return i % 2 })
	odd := filepath.Join(root, "oddnames")
	writeSharded(t, odd, ts, []string{"model.safetensors-00001-of-00003.safetensors", "weights-b.safetensors", "zz.safetensors"}, func(i int) int { return i % 3 })

	for _, path := range []string{single, hfSingle, sharded, filepath.Join(sharded, IndexFileName), odd} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			names := m.Names()
			if !slices.IsSorted(names) || len(names) != len(ts) {
				t.Fatalf("names %v", names)
			}
			for _, n := range names {
				x, err := m.Tensor(n)
				if err != nil {
					t.Fatal(err)
				}
				w := want[n]
				if x.DType != w.DType || !slices.Equal(x.Shape, w.Shape) || !bytes.Equal(x.Data, w.Data) {
					t.Errorf("%s differs", n)
				}
				m.Release(n)
			}
			if m.TotalSize() <= 0 {
				t.Error("TotalSize")
			}
		})
	}
}

func TestConvertShardedRoundTrip(t *testing.T) {
	ts := testTensors(t)
	want := byName(ts)
	root := t.TempDir()
	in := filepath.Join(root, "in")
	writeSharded(t, in, ts, []string{"a.safetensors", "b.safetensors"}, func(i int) int { return i % 2 })
	m, err := Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(root, "out")
	res, err := Convert(context.Background(), m, out, tensors.BF16, WriteOptions{MaxShardSize: 9000})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) < 2 {
		t.Fatalf("want several shards, got %v", res.Files)
	}
	for i, f := range res.Files {
		if want := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(res.Files)); filepath.Base(f) != want {
			t.Errorf("shard %d named %s, want %s", i, filepath.Base(f), want)
		}
		st, _ := os.Stat(f)
		h, _ := safetensors.ReadHeaderFile(f)
		if h.DataSize > 9000 && len(h.Tensors) > 1 {
			t.Errorf("%s holds %d bytes of data over the 9000 limit", f, st.Size())
		}
		if h.Metadata["format"] != "pt" {
			t.Errorf("%s: metadata %v not kept", f, h.Metadata)
		}
	}
	// companions copied, other weight formats and hidden files not
	for name, wantCopied := range map[string]bool{"config.json": true, "tokenizer.json": true, "pytorch_model.bin": false, ".gitattributes": false, "a.safetensors": false} {
		_, err := os.Stat(filepath.Join(out, name))
		if (err == nil) != wantCopied {
			t.Errorf("%s copied=%v, want %v", name, err == nil, wantCopied)
		}
	}
	ixBytes, _ := os.ReadFile(filepath.Join(out, IndexFileName))
	if !bytes.HasPrefix(ixBytes, []byte("{\n  \"metadata\": {\n    \"total_size\": ")) || !bytes.HasSuffix(ixBytes, []byte("\n  }\n}\n")) {
		t.Errorf("index layout:\n%s", ixBytes)
	}
	got, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if got.Index.TotalSize != res.TotalSize || got.TotalSize() != res.TotalSize {
		t.Errorf("total_size %d, data %d, written %d", got.Index.TotalSize, got.TotalSize(), res.TotalSize)
	}
	for _, n := range got.Names() {
		x, _ := got.Tensor(n)
		w := want[n]
		if !w.DType.IsFloat() {
			if x.DType != w.DType || !bytes.Equal(x.Data, w.Data) {
				t.Errorf("%s (%s) not byte-identical", n, w.DType)
			}
			continue
		}
		if x.DType != tensors.BF16 {
			t.Errorf("%s: %s, want BF16", n, x.DType)
		}
		wv, _ := w.Float32()
		xv, _ := x.Float32()
		for i := range wv {
			if xv[i] != tensors.BF16ToFloat32(tensors.BF16FromFloat32(wv[i])) {
				t.Fatalf("%s[%d]: %v from %v", n, i, xv[i], wv[i])
			}
		}
	}
}

func TestConvertKeepsFP8AndMetadata(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "fp8.safetensors")
	fp8, _ := tensors.New("w", tensors.F8_E4M3, []int64{2, 2})
	copy(fp8.Data, []byte{0x38, 0xb8, 0x7e, 0x00})
	writeFile(t, in, []*tensors.Tensor{fp8}, map[string]string{"quant": "fp8", "format": "pt"})
	m, _ := Open(in)
	defer m.Close()
	out := filepath.Join(root, "out.safetensors")
	if _, err := Convert(context.Background(), m, out, tensors.F16, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(in)
	b, _ := os.ReadFile(out)
	if !bytes.Equal(a, b) {
		t.Fatal("an FP8 file converted to f16 must come out byte-identical")
	}
}

func TestOutputRefusals(t *testing.T) {
	root := t.TempDir()
	ts := testTensors(t)
	in := filepath.Join(root, "model")
	writeSharded(t, in, ts, []string{"s1.safetensors", "s2.safetensors"}, func(i int) int { return i % 2 })
	single := filepath.Join(root, "one.safetensors")
	writeFile(t, single, ts, nil)
	m, _ := Open(in)
	defer m.Close()
	ms, _ := Open(single)
	defer ms.Close()
	ctx := context.Background()
	cases := []struct {
		name string
		m    *Model
		out  string
		opts WriteOptions
	}{
		{"output is the input dir", m, in, WriteOptions{Force: true}},
		{"output is the input dir, other spelling", m, in + "/./", WriteOptions{Force: true}},
		{"output contains the input", m, root, WriteOptions{Force: true}},
		{"output is an input shard", m, filepath.Join(in, "s1.safetensors"), WriteOptions{Force: true}},
		{"output is the input file", ms, single, WriteOptions{Force: true}},
		{"output exists", ms, in + "-exists", WriteOptions{}},
	}
	os.MkdirAll(in+"-exists", 0o755)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Convert(ctx, tc.m, tc.out, tensors.BF16, tc.opts); err == nil {
				t.Fatal("want a refusal")
			}
		})
	}
	// inputs untouched
	m2, err := Open(in)
	if err != nil {
		t.Fatal(err)
	}
	m2.Close()
	// --force replaces an existing output that is not an input
	if _, err := Convert(ctx, ms, in+"-exists", tensors.BF16, WriteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(in+"-exists", "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, root); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func leftovers(t *testing.T, dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func TestFailureAndCancelLeaveNoOutput(t *testing.T) {
	root := t.TempDir()
	ts := testTensors(t)
	in := filepath.Join(root, "in.safetensors")
	writeFile(t, in, ts, nil)
	m, _ := Open(in)
	defer m.Close()
	for _, out := range []string{filepath.Join(root, "outdir"), filepath.Join(root, "out.safetensors")} {
		// a producer error half-way
		n := 0
		boom := errors.New("boom")
		produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
			n++
			if n == 4 {
				return nil, nil, boom
			}
			return m.Passthrough()(ctx, e)
		}
		if _, err := Write(context.Background(), out, m.Entries(), produce, WriteOptions{Workers: 1, MaxShardSize: 5000}); !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
		// cancellation half-way
		ctx, cancel := context.WithCancel(context.Background())
		k := 0
		produce2 := func(c context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
			k++
			if k == 3 {
				cancel()
			}
			return m.Passthrough()(c, e)
		}
		if _, err := Write(ctx, out, m.Entries(), produce2, WriteOptions{Workers: 1, MaxShardSize: 5000}); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failure", out)
		}
	}
	if left := leftovers(t, root); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestBrokenShardedModels(t *testing.T) {
	ts := testTensors(t)
	names := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	mk := func(t *testing.T, edit func(dir string)) string {
		dir := filepath.Join(t.TempDir(), "m")
		writeSharded(t, dir, ts, names, func(i int) int { return i % 2 })
		edit(dir)
		return dir
	}
	editIndex := func(dir string, f func(wm map[string]string)) {
		var ix struct {
			Metadata  map[string]any    `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}
		b, _ := os.ReadFile(filepath.Join(dir, IndexFileName))
		json.Unmarshal(b, &ix)
		f(ix.WeightMap)
		b, _ = json.Marshal(ix)
		os.WriteFile(filepath.Join(dir, IndexFileName), b, 0o644)
	}
	cases := []struct {
		name string
		edit func(dir string)
		want []string // substrings the Open error and Validate problems must contain
	}{
		{"missing shard", func(dir string) { os.Remove(filepath.Join(dir, names[1])) }, []string{names[1], "missing"}},
		{"tensor absent from its shard", func(dir string) {
			editIndex(dir, func(wm map[string]string) { wm["ghost.weight"] = names[0] })
		}, []string{"ghost.weight", names[0]}},
		{"tensor not in the index", func(dir string) {
			editIndex(dir, func(wm map[string]string) { delete(wm, "step") })
		}, []string{"step", "not listed"}},
		{"index points to the wrong shard", func(dir string) {
			editIndex(dir, func(wm map[string]string) { wm["step"] = names[1-(slices.Index(tnames(ts), "step")%2)] })
		}, []string{"step"}},
		{"path traversal in the index", func(dir string) {
			editIndex(dir, func(wm map[string]string) { wm["step"] = "../../etc/passwd" })
		}, []string{"not a plain file name"}},
		{"corrupt shard", func(dir string) {
			os.WriteFile(filepath.Join(dir, names[0]), []byte{1, 2, 3}, 0o644)
		}, []string{names[0], "header too small"}},
		{"empty weight_map beside real shards", func(dir string) {
			os.WriteFile(filepath.Join(dir, IndexFileName), []byte(`{"metadata": {}, "weight_map": {}}`), 0o644)
		}, []string{IndexFileName, "weight_map is empty"}},
		{"null weight_map", func(dir string) {
			os.WriteFile(filepath.Join(dir, IndexFileName), []byte(`{"weight_map": null}`), 0o644)
		}, []string{IndexFileName, "no weight_map"}},
		{"trailing garbage after the index", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, IndexFileName))
			os.WriteFile(filepath.Join(dir, IndexFileName), append(b, []byte("\n{\"x\": 1}")...), 0o644)
		}, []string{IndexFileName, "trailing data"}},
		{"many missing tensors: the first in name order", func(dir string) {
			editIndex(dir, func(wm map[string]string) {
				for i := range 500 {
					wm[fmt.Sprintf("ghost.%03d", i)] = names[0]
				}
			})
		}, []string{`"ghost.000"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := mk(t, tc.edit)
			_, err := Open(dir)
			if err == nil {
				t.Fatal("Open must fail")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q does not mention %q", err, w)
				}
			}
			if strings.HasPrefix(tc.name, "many missing") && !strings.Contains(err.Error(), "and 499 more") {
				t.Errorf("Open error %q does not count the others", err)
			}
			problems, err := Validate(context.Background(), dir, ValidateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var all []string
			for _, p := range problems {
				if !p.Warning {
					all = append(all, p.String())
				}
			}
			joined := strings.Join(all, "\n")
			if len(all) == 0 {
				t.Fatal("Validate found no problem")
			}
			for _, w := range tc.want {
				if !strings.Contains(joined, w) {
					t.Errorf("Validate problems %.500q do not mention %q", joined, w)
				}
			}
		})
	}
}

func tnames(ts []*tensors.Tensor) []string {
	var out []string
	for _, x := range ts {
		out = append(out, x.Name)
	}
	return out
}

func TestValidateValues(t *testing.T) {
	dir := t.TempDir()
	x, _ := tensors.FromFloat32("bad", tensors.F32, []int64{4}, []float32{1, float32(math.NaN()), float32(math.Inf(1)), float32(math.NaN())})
	y, _ := tensors.FromFloat64("big", tensors.F64, []int64{1}, []float64{1e300})
	p := filepath.Join(dir, "v.safetensors")
	writeFile(t, p, []*tensors.Tensor{x, y}, nil)
	problems, err := Validate(context.Background(), p, ValidateOptions{})
	if err != nil || len(problems) != 0 {
		t.Fatalf("header-only validation: %v %v", problems, err)
	}
	problems, _ = Validate(context.Background(), p, ValidateOptions{CheckValues: true})
	if len(problems) != 1 || problems[0].Tensor != "bad" || !strings.Contains(problems[0].String(), "2 NaN and 1 infinite") {
		t.Fatalf("problems %v", problems)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"5GB": 5e9, "500MB": 5e8, "500mb": 5e8, "2GiB": 2 << 30, "1.5GB": 1.5e9, "1000": 1000, "10KB": 1e4, "3 MB": 3e6, "1T": 1e12} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GB", "-5GB", "0", "abc", "1e30GB", "NaN"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) must fail", bad)
		}
	}
}

func TestIndexEncoding(t *testing.T) {
	ix := &Index{TotalSize: 42, WeightMap: map[string]string{"b": "s2", "a.é": "s1"}}
	want := "{\n  \"metadata\": {\n    \"total_size\": 42\n  },\n  \"weight_map\": {\n    \"a.\\u00e9\": \"s1\",\n    \"b\": \"s2\"\n  }\n}\n"
	if got := string(encodeIndex(ix)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	back, err := parseIndex(encodeIndex(ix))
	if err != nil || back.TotalSize != 42 || back.WeightMap["a.é"] != "s1" {
		t.Errorf("round trip: %+v %v", back, err)
	}
	if _, err := parseIndex([]byte(`{"weight_map":{"a":"x","a":"y"}}`)); err == nil {
		t.Error("duplicate key must fail")
	}
}

func TestPlanShards(t *testing.T) {
	var entries []safetensors.Entry
	sizes := map[string]int64{}
	for i, n := range []int64{40, 30, 50, 200, 10, 10} {
		name := fmt.Sprintf("t%d", i)
		entries = append(entries, safetensors.Entry{Name: name, DType: tensors.U8, Shape: []int64{n}})
		sizes[name] = n
	}
	plan := planShards(entries, sizes, 100)
	var got [][]string
	for _, s := range plan {
		var names []string
		for _, e := range s {
			names = append(names, e.Name)
		}
		got = append(got, names)
	}
	want := [][]string{{"t0", "t1"}, {"t2"}, {"t3"}, {"t4", "t5"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}

func TestOptionalAndBoundedEntries(t *testing.T) {
	dir := t.TempDir()
	entries := []safetensors.Entry{
		{Name: "a.0.weight", DType: tensors.F32, Shape: []int64{100, 8}, Bounded: true, Optional: true},
		{Name: "a.weight", DType: tensors.F32, Shape: []int64{16, 8}, Optional: true},
		{Name: "b.weight", DType: tensors.F32, Shape: []int64{4, 4}},
	}
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		switch e.Name {
		case "a.0.weight":
			x, _ := tensors.New(e.Name, tensors.F32, []int64{3, 8}) // the rank turned out to be 3
			return x, nil, nil
		case "a.weight":
			return nil, nil, nil // not written
		}
		x, _ := tensors.New(e.Name, tensors.F32, e.Shape)
		return x, nil, nil
	}
	for _, out := range []string{filepath.Join(dir, "one.safetensors"), filepath.Join(dir, "sharded")} {
		res, err := Write(context.Background(), out, entries, produce, WriteOptions{MaxShardSize: 200})
		if err != nil {
			t.Fatal(err)
		}
		if res.Tensors != 2 {
			t.Errorf("%d tensors written", res.Tensors)
		}
		m, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		info, ok := m.Info("a.0.weight")
		if fmt.Sprint(m.Names()) != "[a.0.weight b.weight]" || !ok || fmt.Sprint(info.Shape) != "[3 8]" {
			t.Errorf("%s: names %v, a.0.weight %v", out, m.Names(), info.Shape)
		}
		m.Close()
	}
	// a required entry the producer leaves out is an error
	bad := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) { return nil, nil, nil }
	if _, err := Write(context.Background(), filepath.Join(dir, "bad.safetensors"), entries[2:], bad, WriteOptions{}); err == nil {
		t.Error("a missing required tensor must fail")
	}
}

// TestTruncatedInputIsAnError: a file truncated after it was opened (and
// mapped) gives an error naming the tensor, not a crash (SIGBUS).
func TestTruncatedInputIsAnError(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	big, _ := tensors.New("w", tensors.F32, []int64{1 << 20})
	small, _ := tensors.New("a", tensors.F32, []int64{4})
	writeFile(t, in, []*tensors.Tensor{big, small}, nil)
	m, err := Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	os.Truncate(in, 100) // behind wtool's back
	produce := func(_ context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		x, err := m.Tensor(e.Name)
		if err != nil {
			return nil, nil, err
		}
		c := &tensors.Tensor{Name: x.Name, DType: x.DType, Shape: x.Shape, Data: append([]byte(nil), x.Data...)}
		return c, nil, nil
	}
	_, err = Write(context.Background(), filepath.Join(dir, "out.safetensors"), m.Entries(), produce, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("got %v", err)
	}
}
