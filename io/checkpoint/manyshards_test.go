package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wtool/wtool/tensors"
)

// TestTwoThousandShards: shard files are opened one at a time, so a model
// of 2,000 shards converts with a limit of 128 open files (opening every
// shard's file up front failed beyond about 1,010 with the usual 1,024).
func TestTwoThousandShards(t *testing.T) {
	base := "/dev/shm" // no fsync cost for 2,000 files
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = ""
	}
	dir, err := os.MkdirTemp(base, "wtool-shards-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	const n = 2000
	var ts []*tensors.Tensor
	for i := range n {
		x, _ := tensors.FromFloat32(fmt.Sprintf("t%04d", i), tensors.F32, []int64{4}, []float32{float32(i), 1, 2, 3})
		ts = append(ts, x)
	}
	in := filepath.Join(dir, "in.safetensors")
	writeFile(t, in, ts, nil)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 128
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip("cannot lower the open-file limit:", err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	m, err := Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := filepath.Join(dir, "out")
	w, err := Convert(context.Background(), m, out, 0, WriteOptions{MaxShardSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Files) != n {
		t.Fatalf("%d shards", len(w.Files))
	}
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) // reading keeps every shard open
	back, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	x, err := back.Tensor("t1999")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := x.Float32(); v[0] != 1999 || len(back.Names()) != n {
		t.Errorf("read back %v, %d tensors", v, len(back.Names()))
	}
}
