package checkpoint

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/wtool/wtool/tensors"
)

// TorchDTypeName returns PyTorch's name of a floating dtype as config.json
// records it ("bfloat16"), or "" for other types.
func TorchDTypeName(dt tensors.DType) string {
	switch dt {
	case tensors.F64:
		return "float64"
	case tensors.F32:
		return "float32"
	case tensors.F16:
		return "float16"
	case tensors.BF16:
		return "bfloat16"
	}
	return ""
}

var dtypeKey = regexp.MustCompile(`("(?:torch_dtype|dtype)"\s*:\s*)"[^"\\]*"`)

// SetConfigDType returns a config.json with every "torch_dtype" (and
// "dtype", transformers' newer name) string value set to name, the rest of
// the file byte-identical, and whether anything changed. Sub-configurations
// (text_config, vision_config) are updated too: they describe the same
// weights.
func SetConfigDType(config []byte, name string) ([]byte, bool, error) {
	var probe any
	if err := json.Unmarshal(config, &probe); err != nil {
		return nil, false, err
	}
	out := dtypeKey.ReplaceAll(config, []byte(`${1}"`+name+`"`))
	return out, string(out) != string(config), nil
}

// WithDType returns write options whose config.json records dt as the
// weights' dtype, for an output whose floating tensors are all converted to
// dt: config.json as opts will write it (an updated one in opts.Files, or the
// model's own among opts.CopyFiles) gets its torch_dtype rewritten. A zero dt,
// or no config.json in the output, leaves opts as they are.
func (m *Model) WithDType(opts WriteOptions, dt tensors.DType) (WriteOptions, error) {
	name := TorchDTypeName(dt)
	if name == "" {
		return opts, nil
	}
	var src []byte
	if b, ok := opts.Files["config.json"]; ok {
		src = b
	} else if m.Dir != "" && slices.Contains(opts.CopyFiles, filepath.Join(m.Dir, "config.json")) {
		b, err := os.ReadFile(filepath.Join(m.Dir, "config.json"))
		if err != nil {
			return opts, err
		}
		src = b
	} else {
		return opts, nil
	}
	out, changed, err := SetConfigDType(src, name)
	if err != nil {
		return opts, fmt.Errorf("%s: config.json: %w", m.Path, err)
	}
	if !changed {
		return opts, nil
	}
	files := map[string][]byte{}
	for k, v := range opts.Files {
		files[k] = v
	}
	files["config.json"] = out
	opts.Files = files
	return opts, nil
}
