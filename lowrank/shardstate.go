package lowrank

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"

	"github.com/wtool/wtool/io/checkpoint"
)

// What compression and adapter extraction share in writing their outputs:
// the write options of an SVD-bound job, and the state each shard of a
// directory output keeps (reports.json in the shard's state directory) for
// the finalizer that writes the side files from all of them.

// svdWriteOptions completes the write options of a job whose tensors are
// SVDs: m's defaults, the progress callback, and one tensor at a time
// unless told otherwise.
func svdWriteOptions(m *checkpoint.Model, wopts checkpoint.WriteOptions, progress func(done, total int64)) (checkpoint.WriteOptions, error) {
	wopts, err := m.DefaultWriteOptions(wopts)
	if err != nil {
		return wopts, err
	}
	wopts.Progress = progress
	if wopts.Workers == 0 {
		// one matrix at a time: the SVD already uses every core, and a second
		// one in flight only doubles the memory
		wopts.Workers = 1
	}
	return wopts, nil
}

// saveShardState writes a shard's state st as reports.json in dir.
func saveShardState(dir string, st any) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "reports.json"), b, 0o644)
}

// loadShardState reads the reports.json that saveShardState wrote in dir
// into st.
func loadShardState(dir string, st any) error {
	b, err := os.ReadFile(filepath.Join(dir, "reports.json"))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, st)
}

// jsonSafe replaces a NaN or Inf (which JSON cannot hold; only possible
// with --allow-nonfinite) by -1 in what a shard's state records.
func jsonSafe(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return -1
	}
	return x
}
