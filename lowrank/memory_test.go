package lowrank

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// peakHeap runs f and returns the largest heap sampled while it ran, with
// the collector made eager so that the heap follows the live data.
func peakHeap(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	f()
	close(stop)
	wg.Wait()
	return peak.Load()
}

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
			peaks[layers] = peakHeap(func() {
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
