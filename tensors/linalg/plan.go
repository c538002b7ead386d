// Copyright ©2025 The wtool Authors.

package linalg

// Cost model used to decide how a product is split among goroutines. Costs
// are measured in floating-point operations of the micro-kernel.
const (
	// costCopy is the cost of packing one element or of one load+store of
	// an element of C outside the micro-kernel.
	costCopy = 16
	// costWorker is the fixed cost of each additional task run by another
	// goroutine (hand-off, synchronisation, cold caches), about 1µs; see
	// parallel.go.
	costWorker = 200000
)

// plan describes how a product is split into tasks: the rows of C into tm
// parts and the columns into tn parts, or the inner dimension into tk parts
// (tk > 1 implies tm == tn == 1).
type plan struct{ tm, tn, tk int }

func (p plan) tasks() int { return p.tm * p.tn * p.tk }

// taskCost estimates the cost of an m×n×k product run by serial.
func (cfg *config[T]) taskCost(m, n, k int) float64 {
	flops := 2 * float64(roundUp(m, cfg.mr)) * float64(roundUp(n, cfg.nr)) * float64(k)
	copies := float64(m)*float64(k) + float64(ceilDiv(m, cfg.mc))*float64(k)*float64(n)
	cTraffic := float64(m) * float64(n) * float64(ceilDiv(k, cfg.kc))
	return flops + costCopy*(copies+cTraffic)
}

// plan chooses the split of an m×n×k product among at most workers
// goroutines that minimises the estimated completion time.
func (cfg *config[T]) plan(m, n, k, workers int) plan {
	best := plan{1, 1, 1}
	bestCost := cfg.taskCost(m, n, k)
	if workers <= 1 || bestCost < 2*costWorker {
		return best
	}
	for t := 2; t <= workers; t++ {
		over := float64(t-1) * costWorker
		for tm := 1; tm <= t; tm++ {
			if t%tm != 0 {
				continue
			}
			tn := t / tm
			rows := roundUp(ceilDiv(m, tm), cfg.mr)
			cols := roundUp(ceilDiv(n, tn), cfg.nr)
			if ceilDiv(m, rows) != tm || ceilDiv(n, cols) != tn {
				continue // fewer tasks than t; covered by a smaller t
			}
			if cost := cfg.taskCost(rows, cols, k) + over; cost < bestCost {
				best, bestCost = plan{tm, tn, 1}, cost
			}
		}
		kper := ceilDiv(k, t)
		if ceilDiv(k, kper) != t {
			continue
		}
		reduce := costCopy * float64(t) * float64(m) * float64(n)
		if cost := cfg.taskCost(m, n, kper) + over + reduce; cost < bestCost {
			best, bestCost = plan{1, 1, t}, cost
		}
	}
	return best
}
