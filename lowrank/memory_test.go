package lowrank

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// TestAdapterMemoryOneMatrix: initialising adapters holds one weight
// matrix at a time, whatever the number of targets: with twice the layers
// the peak heap does not grow. (SORSA and SVFit write their float32 factors
// before the residuals, which used to wait in memory: a shard's worth.)
func TestAdapterMemoryOneMatrix(t *testing.T) {
	const width = 512
	dir := t.TempDir()
	for _, method := range []string{"pissa", "sorsa", "svfit"} {
		peaks := map[int]uint64{}
		for _, layers := range []int{8, 16} {
			path := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", layers))
			if _, err := os.Stat(path); err != nil {
				r := rand.New(rand.NewPCG(1, uint64(layers)))
				var ts []*tensors.Tensor
				for l := range layers {
					v := make([]float32, width*width)
					for i := range v {
						v[i] = float32(r.NormFloat64())
					}
					x, _ := tensors.FromFloat32(fmt.Sprintf("layers.%02d.weight", l), tensors.BF16, []int64{width, width}, v)
					ts = append(ts, x)
				}
				f, err := os.Create(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := writeST(f, ts...); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			m, err := checkpoint.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, fmt.Sprintf("%s-%d", method, layers))
			var runErr error
			peaks[layers] = testenv.PeakHeap(t, func() {
				_, _, runErr = InitAdapters(context.Background(), m, out, AdapterOptions{Method: method, Targets: []*regexp.Regexp{regexp.MustCompile("layers")},
					Rule: RankRule{Rank: 4}}, checkpoint.WriteOptions{})
			})
			m.Close()
			if runErr != nil {
				t.Fatal(runErr)
			}
		}
		matrix := uint64(width * width * 4)
		t.Logf("%s: peak heap %d KiB (8 layers), %d KiB (16 layers); one float32 matrix is %d KiB", method, peaks[8]>>10, peaks[16]>>10, matrix>>10)
		if peaks[16] > peaks[8]+3*matrix {
			t.Errorf("%s: peak heap grew from %d to %d bytes with twice the layers", method, peaks[8], peaks[16])
		}
	}
}
