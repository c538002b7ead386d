package merge

import (
	"context"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// Exact top-k selection in bounded memory.
//
// TIES (and any method that keeps the largest magnitudes of a task vector)
// needs, per tensor, the k-th largest of n keys computed on the fly from
// the inputs (|x - base| as float64 bits: non-negative floats order like
// their bits). Sorting a copy needs n keys in memory; instead, streaming
// passes narrow the candidates.
//
// A large tensor is first sampled (a histogram of every sampleEvery-th
// block, a sixteenth of the data), which predicts a narrow range of keys
// around the threshold; one full pass then counts the keys above the range
// and gathers those in it. If the threshold is in the range (it nearly
// always is: the range is the estimate plus six standard errors) it is
// selected in memory from the gathered keys: a large tensor costs 1/16 of a
// pass more than the merge itself. Otherwise, and for tensors too small to
// sample, radix passes take over: a histogram pass over the next digit of
// the keys' bits keeps only the bucket that holds the k-th largest, until
// the candidates fit the gather buffer (then they are selected in memory)
// or all equal one value. Ties at the threshold are kept in index order
// (the first ones), which needs one more counting pass when the ties were
// not gathered. The result is exact whatever the sample. Memory: the
// histograms (2^20 32-bit or 2^18 64-bit counters per goroutine) and at
// most gatherCap (key, index) pairs, whatever n is.

// Threshold is the result of a top-k selection: an element with key v at
// index e is among the k largest when v > Key, or v == Key and e <= Cutoff.
type Threshold struct {
	Key    uint64
	Cutoff int
}

// Keep reports whether the element with key v at index e is kept.
func (t Threshold) Keep(v uint64, e int) bool { return v > t.Key || (v == t.Key && e <= t.Cutoff) }

// keepAll and keepNone are the thresholds of k >= n and k <= 0.
var (
	keepAll  = Threshold{Key: 0, Cutoff: math.MaxInt}
	keepNone = Threshold{Key: math.MaxUint64, Cutoff: -1}
)

// gatherCap bounds the candidates selected in memory (16 bytes each).
var gatherCap = 1 << 21

const (
	firstDigit = 18 // bits of the first histogram (keys have 63 significant bits)
	laterDigit = 16
	// sampleEvery is the stride, in blocks, of the sample pass.
	sampleEvery = 16
	// sampleDigit is the bits of the sample's histogram (uint32 counters).
	sampleDigit = 20
	// minSample is the smallest sample (in elements) worth taking.
	minSample = 1 << 16
)

// selection is the search state of one top-k selection.
type selection struct {
	k      int
	shift  uint   // candidates: keys with key>>shift == prefix>>shift
	prefix uint64 //
	above  int    // keys above every candidate
	count  int    // candidates
	thr    uint64
	known  bool // thr is known
	done   bool
	res    Threshold

	// the sampling route: after the sample pass, a range pass gathers the
	// keys in [rLo, rHi] and counts those above
	sampled  bool
	ranged   bool
	rLo, rHi uint64
	rAbove   []int
	rCount   []int
	rEst     int // the keys expected in the range
	stored   atomic.Int64

	// pass state
	op      int // opHist, opGather, opTies, opSample, opRange
	bits    uint
	hist    [][]uint64 // per worker
	shist   [][]uint32 // per worker, the sample's
	lo, hi  []uint64   // per worker: smallest and largest candidate
	seen    []bool
	gath    [][]keyIndex // per worker
	tieCnts []int32      // ties per block
}

type keyIndex struct {
	key uint64
	idx int
}

const (
	opHist = iota
	opGather
	opTies
	opSample
	opRange
)

var histPool = sync.Pool{}

func getHist(n int) []uint64 {
	if h, ok := histPool.Get().(*[]uint64); ok && cap(*h) >= n {
		s := (*h)[:n]
		clear(s)
		return s
	}
	return make([]uint64, n)
}

var hist32Pool = sync.Pool{}

// sampleHits and sampleMisses count the sampling route's outcomes (tests).
var sampleHits, sampleMisses atomic.Int64

func getHist32(n int) []uint32 {
	if h, ok := hist32Pool.Get().(*[]uint32); ok && cap(*h) >= n {
		s := (*h)[:n]
		clear(s)
		return s
	}
	return make([]uint32, n)
}

func newSelection(k, n int) *selection {
	s := &selection{k: k, shift: 63, count: n}
	switch {
	case k <= 0:
		s.done, s.res = true, keepNone
	case k >= n:
		s.done, s.res = true, keepAll
	}
	return s
}

// inRange reports whether key is a candidate.
func (s *selection) inRange(key uint64) bool {
	return s.shift >= 64 || key>>s.shift == s.prefix>>s.shift
}

// plan chooses the next pass of an unfinished selection.
func (s *selection) plan(workers, n int) {
	switch {
	case s.known:
		s.op = opTies
		s.tieCnts = make([]int32, (n+BlockSize-1)/BlockSize)
	case s.ranged:
		s.op = opRange
		s.gath = make([][]keyIndex, workers)
		for w := range s.gath {
			s.gath[w] = make([]keyIndex, 0, s.rEst/workers+256)
		}
		s.rAbove = make([]int, workers)
		s.rCount = make([]int, workers)
		s.stored.Store(0)
	case !s.sampled && s.count == n && n > gatherCap && n/sampleEvery >= minSample:
		s.op = opSample
		s.bits = sampleDigit
		s.shist = make([][]uint32, workers)
	case s.count <= gatherCap:
		s.op = opGather
		s.gath = make([][]keyIndex, workers)
	default:
		s.op = opHist
		s.bits = laterDigit
		if s.shift == 63 {
			s.bits = firstDigit
		}
		s.bits = min(s.bits, s.shift)
		s.hist = make([][]uint64, workers)
		s.lo = make([]uint64, workers)
		s.hi = make([]uint64, workers)
		s.seen = make([]bool, workers)
	}
}

// visit processes the keys of one block (element lo + i has key keys[i]).
func (s *selection) visit(w, lo int, keys []uint64) {
	switch s.op {
	case opSample:
		if (lo/BlockSize)%sampleEvery != 0 {
			return
		}
		h := s.shist[w]
		if h == nil {
			h = getHist32(1 << s.bits)
			s.shist[w] = h
		}
		low := 63 - s.bits
		for _, key := range keys {
			h[key>>low]++
		}
	case opRange:
		g := s.gath[w]
		rLo, width, rHi := s.rLo, s.rHi-s.rLo, s.rHi
		var above, count int
		if n8 := len(keys) &^ 7; haveAVX512 && n8 > 0 && n8 <= BlockSize {
			// counted 8 at a time; the (few) keys in the range are
			// gathered in index order from the hit bits
			var hits [BlockSize / 8]uint8
			above = rangeCountx512(&keys[0], n8, &rangeParams{lo: rLo, width: width, hi: rHi}, &hits[0])
			for j, h := range hits[:n8/8] {
				for ; h != 0; h &= h - 1 {
					i := 8*j + bits.TrailingZeros8(h)
					count++
					if s.stored.Add(1) <= int64(gatherCap) {
						g = append(g, keyIndex{keys[i], lo + i})
					}
				}
			}
			lo += n8
			keys = keys[n8:]
		}
		for i, key := range keys {
			above += int(b2u(key > rHi))
			if key-rLo <= width { // rLo <= key <= rHi, in one (rarely true) test
				count++
				if s.stored.Add(1) <= int64(gatherCap) {
					g = append(g, keyIndex{key, lo + i})
				}
			}
		}
		s.gath[w] = g
		s.rAbove[w] += above
		s.rCount[w] += count
	case opHist:
		h := s.hist[w]
		if h == nil {
			h = getHist(1 << s.bits)
			s.hist[w] = h
		}
		low := s.shift - s.bits
		mask := uint64(1)<<s.bits - 1
		mn, mx, seen := s.lo[w], s.hi[w], s.seen[w]
		for _, key := range keys {
			if !s.inRange(key) {
				continue
			}
			h[(key>>low)&mask]++
			if !seen {
				mn, mx, seen = key, key, true
			}
			mn, mx = min(mn, key), max(mx, key)
		}
		s.lo[w], s.hi[w], s.seen[w] = mn, mx, seen
	case opGather:
		g := s.gath[w]
		for i, key := range keys {
			if s.inRange(key) {
				g = append(g, keyIndex{key, lo + i})
			}
		}
		s.gath[w] = g
	case opTies:
		var c int32
		for _, key := range keys {
			if key == s.thr {
				c++
			}
		}
		s.tieCnts[lo/BlockSize] = c
	}
}

// finishPass updates the search after a pass; tieIndex finds, for the ties
// pass, the index of the need-th tie (1-based) within one block.
func (s *selection) finishPass(n int, tieIndex func(block, need int) (int, error)) error {
	switch s.op {
	case opSample:
		s.sampled = true
		size := 1 << s.bits
		// the workers' histograms added into the first (32-bit counts: the
		// sample has n/sampleEvery < 2^32 keys)
		var total []uint32
		for _, h := range s.shist {
			if h == nil {
				continue
			}
			if total == nil {
				total = h
				continue
			}
			for d, c := range h {
				total[d] += c
			}
			hist32Pool.Put(&h)
		}
		s.shist = nil
		if total == nil {
			total = getHist32(size)
		}
		var m uint64
		for _, c := range total {
			m += uint64(c)
		}
		// the sample's ranks (from the top) around the threshold's
		p := float64(s.k) / float64(n)
		r := p * float64(m)
		delta := 6*math.Sqrt(float64(m)*p*(1-p)) + 32
		lo, hi := r-delta, r+delta
		low := 63 - s.bits
		s.rLo, s.rHi = 0, math.MaxUint64
		var cum, cumHi float64
		hiSet := false
		for d := size - 1; d >= 0; d-- {
			if total[d] == 0 {
				// an empty bucket changes nothing below: cum > lo and
				// cum >= hi (hi > 0) would have held at the last
				// non-empty one
				continue
			}
			c := float64(total[d])
			if !hiSet && cum+c > lo && lo > 0 {
				s.rHi, hiSet, cumHi = uint64(d+1)<<low-1, true, cum
			}
			cum += c
			if cum >= hi {
				s.rLo = uint64(d) << low
				break
			}
		}
		hist32Pool.Put(&total)
		s.ranged = true
		// the keys expected in the range (to size the gather buffers)
		s.rEst = int(min((cum-cumHi)*sampleEvery*5/4, float64(gatherCap)))
	case opRange:
		s.ranged = false
		above, count := 0, 0
		for w := range s.rAbove {
			above += s.rAbove[w]
			count += s.rCount[w]
		}
		var all []keyIndex
		for _, g := range s.gath {
			all = append(all, g...)
		}
		s.gath, s.rAbove, s.rCount = nil, nil, nil
		if above >= s.k || above+count < s.k || len(all) != count {
			sampleMisses.Add(1)
			return nil // the threshold is outside the range: radix passes from the start
		}
		sampleHits.Add(1)
		s.above = above
		return s.selectGathered(n, all)
	case opHist:
		size := 1 << s.bits
		total := s.hist[0]
		if total == nil {
			total = getHist(size)
		}
		var mn, mx uint64
		seen := false
		for w := range s.hist {
			if w > 0 && s.hist[w] != nil {
				for d, c := range s.hist[w] {
					total[d] += c
				}
				histPool.Put(&s.hist[w])
			}
			if s.seen[w] {
				if !seen {
					mn, mx, seen = s.lo[w], s.hi[w], true
				}
				mn, mx = min(mn, s.lo[w]), max(mx, s.hi[w])
			}
		}
		s.hist = nil
		if seen && mn == mx { // every candidate has the same key
			s.thr, s.known = mn, true
			histPool.Put(&total)
			return s.settle(n, s.count, nil)
		}
		low := s.shift - s.bits
		cum := s.above
		for d := size - 1; d >= 0; d-- {
			c := int(total[d])
			if cum+c >= s.k {
				s.above, s.count = cum, c
				s.prefix |= uint64(d) << low
				s.shift = low
				break
			}
			cum += c
		}
		histPool.Put(&total)
		if s.shift == 0 { // every bit known
			s.thr, s.known = s.prefix, true
			return s.settle(n, s.count, nil)
		}
	case opGather:
		var all []keyIndex
		for _, g := range s.gath {
			all = append(all, g...)
		}
		s.gath = nil
		return s.selectGathered(n, all)
	case opTies:
		need := s.k - s.above
		for b, c := range s.tieCnts {
			if need <= int(c) {
				idx, err := tieIndex(b, need)
				if err != nil {
					return err
				}
				s.done, s.res = true, Threshold{Key: s.thr, Cutoff: idx}
				break
			}
			need -= int(c)
		}
		s.tieCnts = nil
		if !s.done {
			s.done, s.res = true, Threshold{Key: s.thr, Cutoff: math.MaxInt}
		}
	}
	return nil
}

// settle finishes once the threshold is known: with all ties kept, or
// their indices gathered, no more passes are needed. above must count the
// keys greater than thr.
func (s *selection) settle(n, ties int, idx []int) error {
	need := s.k - s.above
	switch {
	case need >= ties:
		s.done, s.res = true, Threshold{Key: s.thr, Cutoff: math.MaxInt}
	case idx != nil:
		s.done, s.res = true, Threshold{Key: s.thr, Cutoff: kthSmallestInt(idx, need)}
	}
	return nil
}

// kthLargestKey returns the k-th largest key (1-based), reordering v.
func kthLargestKey(v []uint64, k int) uint64 {
	lo, hi := 0, len(v)-1
	target := k - 1
	seed := uint64(len(v))*0x9E3779B97F4A7C15 + uint64(k)
	for lo < hi {
		seed = splitmix64(seed)
		p := v[lo+int(seed%uint64(hi-lo+1))]
		i, j := lo, hi
		for i <= j {
			for v[i] > p {
				i++
			}
			for v[j] < p {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		switch {
		case target <= j:
			hi = j
		case target >= i:
			lo = i
		default:
			return v[target]
		}
	}
	return v[target]
}

// kthSmallestInt returns the k-th smallest (1-based) of v, reordering v.
func kthSmallestInt(v []int, k int) int {
	if len(v) <= 1<<12 {
		slices.Sort(v)
		return v[k-1]
	}
	u := make([]uint64, len(v))
	for i, x := range v {
		u[i] = uint64(math.MaxInt64 - x) // the k-th largest of the negation
	}
	return math.MaxInt64 - int(kthLargestKey(u, k))
}

// selectTop runs the selections sels (one per key function) over a tensor:
// keyFns[i](lo, in, keys) computes selection i's keys of the block of
// elements lo, lo+1, ... from the decoded inputs ins; uses[i] lists the inputs it reads (a pass decodes
// only the inputs of unfinished selections). It returns when every
// selection is done.
func selectTop(ctx context.Context, t *TensorJob, ins []*Input, uses [][]int, sels []*selection, keyFns []func(lo int, in [][]float64, keys []uint64)) error {
	return selectTopShared(ctx, t, ins, uses, sels, keyFns, nil)
}

// selectTopShared is selectTop for selections that may share keys:
// selection i's keys are keyFns[keyOf[i]] (keyOf nil: keyFns[i]), computed
// once per block for consecutive selections with the same keys (two
// selections over the same keys, as breadcrumbs' two cuts of one task
// vector, cost one key computation).
func selectTopShared(ctx context.Context, t *TensorJob, ins []*Input, uses [][]int, sels []*selection, keyFns []func(lo int, in [][]float64, keys []uint64), keyOf []int) error {
	if keyOf == nil {
		keyOf = make([]int, len(sels))
		for i := range keyOf {
			keyOf[i] = i
		}
	}
	workers := t.Workers()
	keyBufs := make([][]uint64, workers)
	for {
		var active []int
		for i, s := range sels {
			if !s.done {
				s.plan(workers, t.N)
				active = append(active, i)
			}
		}
		if len(active) == 0 {
			return nil
		}
		// the inputs this pass decodes; the others are given as nil
		need := make([]bool, len(ins))
		for _, i := range active {
			for _, k := range uses[i] {
				need[k] = true
			}
		}
		pass := make([]*Input, len(ins))
		for k, in := range ins {
			if need[k] {
				pass[k] = in
			}
		}
		stride := sampleEvery
		for _, i := range active {
			if sels[i].op != opSample {
				stride = 1
			}
		}
		err := t.pass(ctx, pass, stride, func(w, lo int, in [][]float64) error {
			if keyBufs[w] == nil {
				keyBufs[w] = make([]uint64, BlockSize)
			}
			keys := keyBufs[w][:len(in[0])]
			last := -1
			for _, i := range active {
				if keyOf[i] != last {
					last = keyOf[i]
					keyFns[last](lo, in, keys)
				}
				sels[i].visit(w, lo, keys)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, i := range active {
			err := sels[i].finishPass(t.N, func(block, need int) (int, error) {
				// find the need-th tie within one block
				lo := block * BlockSize
				m := min(BlockSize, t.N-lo)
				s := getScratch(len(ins))
				defer scratchPool.Put(s)
				if err := s.decode(ins, lo, m); err != nil {
					return 0, err
				}
				keys := make([]uint64, m)
				keyFns[keyOf[i]](lo, s.in, keys)
				for e, key := range keys {
					if key == sels[i].thr {
						if need--; need == 0 {
							return lo + e, nil
						}
					}
				}
				return lo + m - 1, nil
			})
			if err != nil {
				return err
			}
		}
	}
}

// selectGathered finishes with every candidate gathered (s.above counts
// the keys above them).
func (s *selection) selectGathered(n int, all []keyIndex) error {
	keys := make([]uint64, len(all))
	for i, ki := range all {
		keys[i] = ki.key
	}
	s.thr = kthLargestKey(keys, s.k-s.above)
	s.known = true
	var ties []int
	above := s.above
	for _, ki := range all {
		switch {
		case ki.key > s.thr:
			above++
		case ki.key == s.thr:
			ties = append(ties, ki.idx)
		}
	}
	s.above = above
	return s.settle(n, len(ties), ties)
}
