package checkpoint

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wtool/wtool/tensors"
)

func TestSetConfigDType(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"a": 1, "torch_dtype": "float32"}`, `{"a": 1, "torch_dtype": "bfloat16"}`},
		{"{\n  \"dtype\": \"float16\",\n  \"text_config\": {\"torch_dtype\":\"float32\"}\n}", "{\n  \"dtype\": \"bfloat16\",\n  \"text_config\": {\"torch_dtype\":\"bfloat16\"}\n}"},
		{`{"bnb_4bit_compute_dtype": "float32", "rope_theta": 1e-05}`, `{"bnb_4bit_compute_dtype": "float32", "rope_theta": 1e-05}`},
	}
	for _, c := range cases {
		got, _, err := SetConfigDType([]byte(c.in), "bfloat16")
		if err != nil || string(got) != c.want {
			t.Errorf("%s: %s %v", c.in, got, err)
		}
	}
	if _, _, err := SetConfigDType([]byte(`{"torch_dtype": `), "bfloat16"); err == nil {
		t.Error("invalid JSON accepted")
	}
}

// TestConvertUpdatesTorchDType: convert --dtype leaves no stale torch_dtype
// in config.json; without --dtype the file is copied as it is.
func TestConvertUpdatesTorchDType(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	x, _ := tensors.FromFloat32("w", tensors.F32, []int64{2}, []float32{1, 2})
	writeFile(t, filepath.Join(src, "model.safetensors"), []*tensors.Tensor{x}, nil)
	cfg := "{\n  \"model_type\": \"llama\",\n  \"torch_dtype\": \"float32\"\n}\n"
	os.WriteFile(filepath.Join(src, "config.json"), []byte(cfg), 0o644)
	m, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		dt   tensors.DType
		want string
	}{{tensors.BF16, "{\n  \"model_type\": \"llama\",\n  \"torch_dtype\": \"bfloat16\"\n}\n"}, {0, cfg}} {
		out := filepath.Join(dir, "out"+c.dt.String())
		if _, err := Convert(context.Background(), m, out, c.dt, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(out, "config.json"))
		if string(b) != c.want {
			t.Errorf("%v: config.json %s", c.dt, b)
		}
	}
}
