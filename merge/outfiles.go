package merge

import (
	"os"
	"path/filepath"
	"slices"

	"github.com/wtool/wtool/io/checkpoint"
)

// outputConfig returns the config.json the output will get: one already
// replaced in opts.Files, else the model's copied one; ok is false when the
// output has none.
func outputConfig(opts checkpoint.WriteOptions, m *checkpoint.Model) ([]byte, bool, error) {
	if b, ok := opts.Files["config.json"]; ok {
		return b, true, nil
	}
	path := filepath.Join(m.Dir, "config.json")
	if m.Dir == "" || !slices.Contains(opts.CopyFiles, path) {
		return nil, false, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// withOutputFile returns opts writing one more file into the output
// directory (opts.Files is copied, not changed in place).
func withOutputFile(opts checkpoint.WriteOptions, name string, data []byte) checkpoint.WriteOptions {
	files := make(map[string][]byte, len(opts.Files)+1)
	for k, v := range opts.Files {
		files[k] = v
	}
	files[name] = data
	opts.Files = files
	return opts
}
