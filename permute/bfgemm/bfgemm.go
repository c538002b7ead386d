// Package bfgemm multiplies bfloat16 matrices into float32 ones with the
// AVX512-BF16 dot-product instruction (VDPBF16PS), which does twice the
// multiply-adds per instruction of a float32 FMA. Weight matching uses it for
// the cost matrices of bf16 checkpoints: the weights go from the file into
// the product without being widened to float32.
//
// Each product of two bf16 values is exact in float32; the sums are rounded
// to nearest even in float32 (with subnormal inputs and results flushed to
// zero, as the instruction does), pairs of products at a time. The result is
// as accurate as a float32 GEMM of the widened values, not bit-identical to
// one.
//
// The values are addressed as dwords, two bf16 values of consecutive K
// positions each, so K must be even (pad with a zero) and every row must
// start at an even element.
package bfgemm

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Tile and cache-block sizes (in dwords of two bf16 values for kc): the same
// bytes per block as tensors/linalg's float32 AVX-512 GEMM, twice the K.
const (
	mr, nr = 12, 32
	kc     = 256
	mc     = 1536
	nc     = 384
)

// Available reports whether this CPU (and build) has the kernel.
func Available() bool { return available }

// Layout says how a bf16 operand is stored.
type Layout int

const (
	// Rows: element (i, k) at data[i*ld + k] (a row per unit, K along it).
	Rows Layout = iota
	// PairRows: element (i, k) at data[(k/2)*ld + 2*i + k%2]: rows of K,
	// interleaved two by two, so that the pairs along K are adjacent.
	PairRows
)

// Operand is a bf16 matrix with m rows (units) and k columns (K).
type Operand struct {
	Data   []uint16
	Ld     int // elements between rows (Rows) or pair rows (PairRows); even
	Layout Layout
}

// dwords views the operand as uint32 pairs.
func (o Operand) dwords() []uint32 {
	if len(o.Data) < 2 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&o.Data[0])), len(o.Data)/2)
}

// at returns the dword of unit i and pair q.
func (o Operand) index(i, q int) int {
	if o.Layout == Rows {
		return i*(o.Ld/2) + q
	}
	return q*(o.Ld/2) + i
}

// Options control how MulABt runs.
type Options struct {
	// CPUs, if not nil, holds a token per core in use: each block of rows
	// of C is computed holding one, so that other work holding tokens (an
	// assignment solve, in weight matching) gets its share of the cores.
	CPUs chan struct{}
	// Stop, if not nil, ends the product early when it is closed (between
	// blocks of rows, a fraction of a second apart): C is then incomplete,
	// and the caller is expected to discard it.
	Stop <-chan struct{}
}

// MulABt sets C (m x n, row stride ldc) to A Bᵀ, or adds A Bᵀ to it when
// accumulate is set, where A has m units and B n units of k values each
// (k even). The rows of C are computed in blocks by up to GOMAXPROCS
// goroutines. It panics if the kernel is not available.
func MulABt(m, n, k int, a, b Operand, c []float32, ldc int, accumulate bool, o Options) {
	cpus := o.CPUs
	if !available {
		panic("bfgemm: AVX512-BF16 is not available")
	}
	if k%2 != 0 {
		panic("bfgemm: k must be even")
	}
	if m == 0 || n == 0 {
		return
	}
	kq := k / 2
	if kq == 0 {
		if !accumulate {
			for i := range m {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	workers := runtime.GOMAXPROCS(0)
	if float64(m)*float64(n)*float64(k) < 1<<22 {
		workers = 1
	}
	// blocks of whole tiles, at least two per worker so that a worker that
	// gets a core late still finds work
	rows := min(mc, ((m+2*workers-1)/(2*workers)+mr-1)/mr*mr)
	blocks := (m + rows - 1) / rows
	workers = min(workers, blocks)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if cpus != nil {
					cpus <- struct{}{}
				}
				blk := int(next.Add(1) - 1)
				if o.Stop != nil {
					select {
					case <-o.Stop:
						blk = blocks // stopped: no more blocks
					default:
					}
				}
				if blk < blocks {
					i0 := blk * rows
					serial(i0, min(m, i0+rows), n, kq, a, b, c, ldc, accumulate)
				}
				if cpus != nil {
					<-cpus
				}
				if blk >= blocks {
					return
				}
			}
		}()
	}
	wg.Wait()
}

var pool = sync.Pool{New: func() any { return new(workspace) }}

type workspace struct {
	a, b []uint32
	tile [mr * nr]float32
}

// serial computes the rows [i0, i1) of C.
func serial(i0, i1, n, kq int, a, b Operand, c []float32, ldc int, accumulate bool) {
	ws := pool.Get().(*workspace)
	defer pool.Put(ws)
	// packing buffers for the blocks this call uses (at most mc x kc and
	// nc x kc dwords: 1.5 MiB and 384 KiB)
	round := func(x, t int) int { return (x + t - 1) / t * t }
	if need := round(min(mc, i1-i0), mr) * min(kc, kq); len(ws.a) < need {
		ws.a = make([]uint32, need)
	}
	if need := round(min(nc, n), nr) * min(kc, kq); len(ws.b) < need {
		ws.b = make([]uint32, need)
	}
	ad, bd := a.dwords(), b.dwords()
	for ic := i0; ic < i1; ic += mc {
		mcb := min(mc, i1-ic)
		for pc := 0; pc < kq; pc += kc {
			kcb := min(kc, kq-pc)
			acc := accumulate || pc > 0
			pack(ws.a, ad, a, ic, mcb, pc, kcb, mr)
			for jc := 0; jc < n; jc += nc {
				ncb := min(nc, n-jc)
				pack(ws.b, bd, b, jc, ncb, pc, kcb, nr)
				for ir := 0; ir < mcb; ir += mr {
					ap := &ws.a[ir/mr*mr*kcb]
					rr := min(mr, mcb-ir)
					for jr := 0; jr < ncb; jr += nr {
						bp := &ws.b[jr/nr*nr*kcb]
						cr := min(nr, ncb-jr)
						ci := (ic+ir)*ldc + jc + jr
						if rr == mr && cr == nr {
							_ = c[ci+(mr-1)*ldc+nr-1] // bounds check of the tile
							kernel12x32(kcb, ap, bp, &c[ci], ldc, acc)
							continue
						}
						kernel12x32(kcb, ap, bp, &ws.tile[0], nr, false)
						for r := range rr {
							dst := c[ci+r*ldc : ci+r*ldc+cr]
							src := ws.tile[r*nr : r*nr+cr]
							if acc {
								for j, v := range src {
									dst[j] += v
								}
							} else {
								copy(dst, src)
							}
						}
					}
				}
			}
		}
	}
}

// pack copies units [u0, u0+cnt) and pairs [q0, q0+kq) of an operand into
// panels of w units: panel p holds, for each pair q, the w dwords of its
// units (zero beyond cnt).
func pack(dst, src []uint32, o Operand, u0, cnt, q0, kq, w int) {
	for p := 0; p*w < cnt; p++ {
		panel := dst[p*w*kq : (p+1)*w*kq]
		units := min(w, cnt-p*w)
		if o.Layout == PairRows {
			for q := range kq {
				s := src[o.index(u0+p*w, q0+q):][:units]
				d := panel[q*w : q*w+w]
				copy(d, s)
				clear(d[units:])
			}
			continue
		}
		// q outer: the writes are sequential and the reads walk the units'
		// rows together, each cache line used for 16 pairs in a row
		var rows [32][]uint32
		for r := range units {
			rows[r] = src[o.index(u0+p*w+r, q0):][:kq]
		}
		for q := range kq {
			d := panel[q*w : q*w+w]
			for r := range units {
				d[r] = rows[r][q]
			}
			clear(d[units:])
		}
	}
}
