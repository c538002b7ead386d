package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// TestAssignPartsProperties: every shard goes to exactly one part, parts
// are contiguous and in order, and no part holds more than its share of the
// bytes plus one shard.
func TestAssignPartsProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sizes := rapid.SliceOfN(rapid.Int64Range(0, 1<<40), 1, 300).Draw(t, "sizes")
		n := rapid.IntRange(1, 40).Draw(t, "n")
		parts := AssignParts(sizes, n)
		if len(parts) != n {
			t.Fatalf("%d parts", len(parts))
		}
		var all []int
		var total, largest int64
		for _, s := range sizes {
			total += s
			largest = max(largest, s)
		}
		for _, p := range parts {
			all = append(all, p...)
			var bytes int64
			for _, i := range p {
				bytes += sizes[i]
			}
			if total > 0 && float64(bytes) > float64(total)/float64(n)+float64(largest)+1 {
				t.Fatalf("a part of %d bytes; total %d over %d parts, largest shard %d", bytes, total, n, largest)
			}
		}
		want := make([]int, len(sizes))
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(all, want) {
			t.Fatalf("assignment %v is not every shard once, in order", parts)
		}
	})
	// equal shards split evenly
	if got := fmt.Sprint(AssignParts([]int64{5, 5, 5, 5, 5, 5}, 3)); got != "[[0 1] [2 3] [4 5]]" {
		t.Errorf("equal shards: %s", got)
	}
}

// TestFinalizeIsRerunnable: a finalize interrupted after it moved some
// shards (simulated by moving them itself) completes when run again, and
// one interrupted after the output was in place only cleans up.
func TestFinalizeIsRerunnable(t *testing.T) {
	dir := t.TempDir()
	ts := testTensors(t)
	in := filepath.Join(dir, "in.safetensors")
	writeFile(t, in, ts, nil)
	m, _ := Open(in)
	defer m.Close()
	ctx := context.Background()
	single := filepath.Join(dir, "single")
	if _, err := Convert(ctx, m, single, tensors.BF16, WriteOptions{MaxShardSize: 3000}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for k := 1; k <= 3; k++ {
		if _, err := Convert(ctx, m, out, tensors.BF16, WriteOptions{MaxShardSize: 3000, Part: Part{k, 3}}); err != nil {
			t.Fatal(err)
		}
	}
	// an interrupted finalize moved part 2's shards already
	final := filepath.Join(PartsDir(out), ".final")
	os.MkdirAll(final, 0o755)
	moved, _ := filepath.Glob(filepath.Join(PartsDir(out), "part-00002-of-00003", "model-*"))
	for _, p := range moved {
		os.Rename(p, filepath.Join(final, filepath.Base(p)))
	}
	if _, err := Finalize(ctx, out, FinalizeOptions{Verify: true}); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(single)
	got, _ := os.ReadDir(out)
	if len(files) < 3 || len(got) != len(files) {
		t.Fatalf("%d files, a single run wrote %d", len(got), len(files))
	}
	for _, f := range files {
		a, _ := os.ReadFile(filepath.Join(single, f.Name()))
		b, _ := os.ReadFile(filepath.Join(out, f.Name()))
		if string(a) != string(b) {
			t.Errorf("%s differs from a single run", f.Name())
		}
	}
	if _, err := os.Stat(PartsDir(out)); err == nil {
		t.Error("parts left")
	}
	// interrupted after the output was put in place: only cleanup remains
	out2 := filepath.Join(dir, "out2")
	for k := 1; k <= 2; k++ {
		Convert(ctx, m, out2, tensors.BF16, WriteOptions{MaxShardSize: 3000, Part: Part{k, 2}})
	}
	os.MkdirAll(out2, 0o755)
	for _, p := range []string{"part-00001-of-00002", "part-00002-of-00002"} {
		shards, _ := filepath.Glob(filepath.Join(PartsDir(out2), p, "model-*"))
		for _, s := range shards {
			os.Rename(s, filepath.Join(out2, filepath.Base(s)))
		}
	}
	w, err := Finalize(ctx, out2, FinalizeOptions{})
	if err != nil || len(w.Notes) == 0 {
		t.Fatalf("%v %v", w, err)
	}
	if _, err := os.Stat(PartsDir(out2)); err == nil {
		t.Error("parts left")
	}
}

// TestProducerPanicIsAnError: a panic in a producer (a bug) ends the write
// with a *fault.PanicError carrying the stack, not a crash, and leaves
// nothing behind.
func TestProducerPanicIsAnError(t *testing.T) {
	dir := t.TempDir()
	ts := testTensors(t)
	in := filepath.Join(dir, "in.safetensors")
	writeFile(t, in, ts, nil)
	m, _ := Open(in)
	defer m.Close()
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		var s []int
		_ = s[len(e.Name)] // index out of range
		return nil, nil, nil
	}
	out := filepath.Join(dir, "out")
	_, err := Write(context.Background(), out, m.Entries(), produce, WriteOptions{MaxShardSize: 3000})
	var pe *fault.PanicError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "index out of range") || len(pe.Stack) == 0 {
		t.Fatalf("got %v", err)
	}
	if left := leftovers(t, dir); len(left) > 0 {
		t.Errorf("left %v", left)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("output written")
	}
}

// TestFinalizeKeepsShardsWhenItCannotCommit: a finalize that cannot put the
// output in place (it exists, no Force) loses no shard: run again with
// Force, it completes.
func TestFinalizeKeepsShardsWhenItCannotCommit(t *testing.T) {
	dir := t.TempDir()
	ts := testTensors(t)
	in := filepath.Join(dir, "in.safetensors")
	writeFile(t, in, ts, nil)
	m, _ := Open(in)
	defer m.Close()
	ctx := context.Background()
	out := filepath.Join(dir, "out")
	for k := 1; k <= 2; k++ {
		if _, err := Convert(ctx, m, out, 0, WriteOptions{MaxShardSize: 3000, Part: Part{k, 2}}); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(out, 0o755) // appeared meanwhile
	if _, err := Finalize(ctx, out, FinalizeOptions{}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("got %v", err)
	}
	if _, err := Finalize(ctx, out, FinalizeOptions{Force: true, Verify: true}); err != nil {
		t.Fatal(err)
	}
	back, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	back.Close()
}
