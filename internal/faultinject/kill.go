package faultinject

import (
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
)

// killAfter is read once from WTOOL_TEST_KILL_AFTER_SHARDS: a test of
// --resume sets it to make the process SIGKILL itself, deterministically,
// once that many shard files are complete.
var killAfter = func() int64 {
	n, _ := strconv.ParseInt(os.Getenv("WTOOL_TEST_KILL_AFTER_SHARDS"), 10, 64)
	return n
}()

var shardsDone atomic.Int64

// ShardDone is called by the checkpoint writer each time a shard file is
// complete (renamed into place and recorded).
func ShardDone() {
	if killAfter > 0 && shardsDone.Add(1) == killAfter {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	}
}
