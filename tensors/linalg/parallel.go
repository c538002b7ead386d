// Copyright ©2025 The wtool Authors.

package linalg

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Parallel tasks are run by a team of long-lived worker goroutines rather
// than by goroutines started per call: waking an idle thread can take tens
// to hundreds of microseconds (on virtual machines in particular), which
// would dominate products of a few hundred microseconds. A worker that
// becomes idle keeps polling for new tasks for spinTime, yielding its P with
// runtime.Gosched, and then blocks until new tasks are posted. The calling
// goroutine always takes part in its own job, so a job completes even if no
// worker is available.

// spinTime is how long an idle worker polls for new tasks before blocking.
const spinTime = 200 * time.Microsecond

// job is one call of parallelFor: tasks 0..n-1 of run.
type job struct {
	run  func(i int)
	n    int64
	next atomic.Int64 // next task to claim
	done atomic.Int64 // number of finished tasks
}

// runTasks claims and runs tasks of j until none are left.
func (j *job) runTasks() {
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.run(int(i))
		j.done.Add(1)
	}
}

// team is the pool of worker goroutines.
var team struct {
	mu      sync.Mutex
	cond    *sync.Cond // signalled, with mu held, when jobs are posted
	jobs    []*job     // posted jobs that may have unclaimed tasks
	pending atomic.Int32
	workers int // number of started workers
	parked  int // number of workers blocked in cond.Wait
}

func init() { team.cond = sync.NewCond(&team.mu) }

// parallelFor runs f(0), ..., f(n-1) concurrently on the calling goroutine
// and at most n-1 workers, and returns when all have finished.
func parallelFor(n int, f func(i int)) {
	if n <= 1 {
		if n == 1 {
			f(0)
		}
		return
	}
	j := &job{run: f, n: int64(n)}
	want := min(n-1, runtime.GOMAXPROCS(0)-1)
	team.mu.Lock()
	for team.workers < want {
		team.workers++
		go worker()
	}
	team.jobs = append(team.jobs, j)
	team.pending.Add(1)
	if team.parked > 0 {
		team.cond.Broadcast()
	}
	team.mu.Unlock()

	j.runTasks()
	team.mu.Lock()
	removeJob(j)
	team.mu.Unlock()
	for j.done.Load() < j.n {
		runtime.Gosched()
	}
}

// removeJob removes j from the posted jobs if it is still there. team.mu
// must be held.
func removeJob(j *job) {
	for i, p := range team.jobs {
		if p == j {
			copy(team.jobs[i:], team.jobs[i+1:])
			team.jobs[len(team.jobs)-1] = nil
			team.jobs = team.jobs[:len(team.jobs)-1]
			team.pending.Add(-1)
			return
		}
	}
}

// pickJob returns a posted job with unclaimed tasks, removing exhausted
// jobs, or nil. team.mu must be held.
func pickJob() *job {
	for len(team.jobs) > 0 {
		j := team.jobs[0]
		if j.next.Load() < j.n {
			return j
		}
		removeJob(j)
	}
	return nil
}

// worker runs tasks of posted jobs forever.
func worker() {
	idleSince := time.Now()
	for {
		if team.pending.Load() > 0 {
			team.mu.Lock()
			j := pickJob()
			team.mu.Unlock()
			if j != nil {
				j.runTasks()
				idleSince = time.Now()
				continue
			}
		}
		if time.Since(idleSince) < spinTime {
			runtime.Gosched()
			continue
		}
		team.mu.Lock()
		for team.pending.Load() == 0 {
			team.parked++
			team.cond.Wait()
			team.parked--
		}
		team.mu.Unlock()
		idleSince = time.Now()
	}
}
