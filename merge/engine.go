package merge

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// BlockSize is the number of elements a Kernel's Fn and a pass function
// see at a time.
const BlockSize = 4096

// checkEvery is how many elements a loop processes between two checks of
// its context: cancellation stops every loop within about a million
// elements (milliseconds).
const checkEvery = 1 << 20

// runBlocks is how many consecutive blocks a pass worker takes at a time.
const runBlocks = 64

// processed counts the elements passes and kernels have processed (tests
// check how much work happens after a cancellation).
var processed atomic.Int64

// Job is an opened merge: the plan, its models and what every tensor's
// merge shares.
type Job struct {
	Plan   *Plan
	Method Method
	// Models are the plan's models, opened, in order.
	Models []*checkpoint.Model
	// Base is the opened base model, nil without one. When the base is one
	// of the models, BaseIndex is its index in Models (else -1).
	Base      *checkpoint.Model
	BaseIndex int
	// OutDType is the output dtype of floating tensors (0: each tensor's
	// dtype in the first model).
	OutDType tensors.DType
	// NumLayers is one more than the largest layer index of the first
	// model's tensor names (see LayerOf).
	NumLayers int
	// MaxMemory is the memory budget of the run (WriteOptions.MaxMemory,
	// or its default).
	MaxMemory int64
	Report    *Report
	opened    []*checkpoint.Model
	baseOnly  map[string]bool // output tensors only the base has
	nums      map[string]*numParam
	vocab     *vocabJob                         // the output vocabulary (Plan.Vocab), nil without one
	loras     map[*checkpoint.Model]*loraSource // LoRA adapters merged into models
	dry       bool                              // Describe: no input is computed
	aligned   *alignment                        // Plan.Align's permutations
	ahead     sync.WaitGroup                    // read-ahead goroutines
	keepBytes atomic.Int64                      // recorded keep decisions in flight (reserveKeep)
}

// numParam is a Number parameter resolved for every model.
type numParam struct {
	model  []Setting // per model: its own, the global one or the default
	global Setting   // the global value or the default
	def    Setting
}

func (n *numParam) eval(s Setting, tensor string, depth float64) float64 {
	if x, ok := s.Eval(tensor, depth); ok {
		return x
	}
	x, _ := n.def.Eval(tensor, depth)
	return x
}

// resolveNums resolves the plan's Number parameters once.
func (j *Job) resolveNums() {
	j.nums = map[string]*numParam{}
	for name, prm := range j.Plan.schema {
		if prm.Kind != Number {
			continue
		}
		np := &numParam{global: j.Plan.Global(name).Num, def: prm.Default.Num}
		if prm.Scope == PerModel {
			for i := range j.Plan.Models {
				np.model = append(np.model, j.Plan.ModelValue(i, name).Num)
			}
		}
		j.nums[name] = np
	}
}

// num returns a Number parameter's resolution.
func (j *Job) num(name string) *numParam {
	if np, ok := j.nums[name]; ok {
		return np
	}
	panic(fmt.Sprintf("merge: method %s has no number parameter %q", j.Plan.Method, name))
}

// Note adds an informational line to the report.
func (j *Job) Note(format string, args ...any) {
	j.Report.Notes = append(j.Report.Notes, fmt.Sprintf(format, args...))
}

// Report describes a finished merge.
type Report struct {
	Method string
	Output *checkpoint.Written
	Notes  []string // what was chosen on the user's behalf (rescaling, spec, ...)
	Sweeps int      // weight matching sweeps (wm)
	Width  int      // pleas: merged hidden width of the first group
}

// TensorJob is the merge of one floating-point output tensor: its inputs,
// the parameters at its depth, and streaming passes over the inputs for
// whole-tensor quantities.
type TensorJob struct {
	Job   *Job
	Name  string
	Shape []int64
	N     int // elements
	// Depth is the tensor's relative depth (see Depth).
	Depth float64
	// DType is the output dtype.
	DType tensors.DType
	// Models are the tensor in each model, in plan order.
	Models []*Input
	// Base is the tensor in the base model, nil without a base.
	Base *Input
	// workers bounds the goroutines of a pass (0: GOMAXPROCS).
	workers int
}

// ModelNum returns model i's value of a per-model Number parameter for
// this tensor.
func (t *TensorJob) ModelNum(i int, name string) float64 {
	np := t.Job.num(name)
	return np.eval(np.model[i], t.Name, t.Depth)
}

// Num returns a global Number parameter's value for this tensor.
func (t *TensorJob) Num(name string) float64 {
	np := t.Job.num(name)
	return np.eval(np.global, t.Name, t.Depth)
}

// Input is one input tensor of a merge: bytes of a mapped file (read only
// inside safetensors.Guard, so a file truncated underneath is an error),
// optionally read through a permutation of its axes, or float32 values in
// memory.
type Input struct {
	// File is the file holding the tensor ("" for values in memory, or
	// when FileName looks it up).
	File   string
	Tensor string
	DType  tensors.DType
	Shape  []int64
	Data   []byte
	vals   []float32 // values in memory
	// index[a] gives, for each position along axis a, the source position
	// (nil: identity); set for inputs read through a permutation.
	index          [][]int
	allowNonFinite bool
	model          *checkpoint.Model // for Prefetch/Release
}

// FileName returns the file holding the tensor (looked up when needed:
// only messages need it).
func (in *Input) FileName() string {
	if in.File != "" || in.model == nil {
		return in.File
	}
	info, _ := in.model.Info(in.Tensor)
	return info.File
}

// NumElements returns the number of elements.
func (in *Input) NumElements() int {
	if in.vals != nil {
		return len(in.vals)
	}
	n, _ := tensors.NumElements(in.Shape)
	return int(n)
}

// memInput returns an Input over values in memory.
func memInput(name string, v []float32) *Input {
	return &Input{Tensor: name, DType: tensors.F32, Shape: []int64{int64(len(v))}, vals: v}
}

// NonFiniteInputError reports a NaN or infinite value in an input tensor.
type NonFiniteInputError struct {
	File   string
	Tensor string
	Index  int64
	Value  float64
}

func (e *NonFiniteInputError) Error() string {
	f := e.File
	if f == "" {
		f = "input"
	}
	return fmt.Sprintf("%s: tensor %q has a non-finite value (%g) at element %d (use --allow-nonfinite to merge it anyway)", f, e.Tensor, e.Value, e.Index)
}

// Decode decodes elements [lo, lo+len(dst)) into dst. A NaN or Inf is an
// error naming the file, unless the merge allows them.
func (in *Input) Decode(dst []float64, lo int) error {
	if in.vals != nil {
		for k, v := range in.vals[lo : lo+len(dst)] {
			dst[k] = float64(v)
		}
	} else {
		fin := false
		err := safetensors.Guard("", in.Tensor, func() error {
			if in.index != nil {
				return in.gather(dst, lo)
			}
			es := in.DType.Bits() / 8
			src := in.Data[lo*es : (lo+len(dst))*es]
			var ok bool
			if fin, ok = decodeFast(dst, src, in.DType); ok {
				return nil
			}
			return tensors.DecodeFloat64(dst, src, in.DType)
		})
		if err != nil {
			if fe, ok := err.(*safetensors.FaultError); ok {
				fe.File = in.FileName()
				return fe
			}
			return fmt.Errorf("%s: tensor %q: %w", in.FileName(), in.Tensor, err)
		}
		if fin {
			return nil
		}
	}
	if !in.allowNonFinite {
		for k, x := range dst {
			if math.Float64bits(x)&0x7ff0000000000000 == 0x7ff0000000000000 {
				return &NonFiniteInputError{File: in.FileName(), Tensor: in.Tensor, Index: int64(lo + k), Value: x}
			}
		}
	}
	return nil
}

// gather decodes elements [lo, lo+len(dst)) of the permuted tensor: element
// (i0, i1, ...) is the source's (index[0][i0], index[1][i1], ...).
func (in *Input) gather(dst []float64, lo int) error {
	rank := len(in.Shape)
	es := in.DType.Bits() / 8
	dec := elementDecoder(in.DType)
	if dec == nil {
		return tensors.ErrNotFloat
	}
	if rank == 0 {
		for k := range dst {
			dst[k] = dec(in.Data[(lo+k)*es:])
		}
		return nil
	}
	strides := make([]int, rank)
	s := 1
	for a := rank - 1; a >= 0; a-- {
		strides[a] = s
		s *= int(in.Shape[a])
	}
	pos := make([]int, rank)
	r := lo
	for a := range rank {
		pos[a] = r / strides[a]
		r %= strides[a]
	}
	last := rank - 1
	for k := 0; k < len(dst); {
		base := 0
		for a := range last {
			p := pos[a]
			if ix := in.index[a]; ix != nil {
				p = ix[p]
			}
			base += p * strides[a]
		}
		ix := in.index[last]
		for ; pos[last] < int(in.Shape[last]) && k < len(dst); pos[last]++ {
			p := pos[last]
			if ix != nil {
				p = ix[p]
			}
			dst[k] = dec(in.Data[(base+p)*es:])
			k++
		}
		if pos[last] < int(in.Shape[last]) {
			break
		}
		pos[last] = 0
		for a := last - 1; a >= 0; a-- {
			pos[a]++
			if pos[a] < int(in.Shape[a]) {
				break
			}
			pos[a] = 0
		}
	}
	return nil
}

func elementDecoder(dt tensors.DType) func(b []byte) float64 {
	switch dt {
	case tensors.F64:
		return func(b []byte) float64 { return math.Float64frombits(le64(b)) }
	case tensors.F32:
		return func(b []byte) float64 { return float64(math.Float32frombits(le32(b))) }
	case tensors.BF16:
		return func(b []byte) float64 { return float64(tensors.BF16ToFloat32(le16(b))) }
	case tensors.F16:
		return func(b []byte) float64 { return float64(tensors.F16ToFloat32(le16(b))) }
	}
	return nil
}

func le16(b []byte) uint16 { return uint16(b[0]) | uint16(b[1])<<8 }
func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func le64(b []byte) uint64 { return uint64(le32(b)) | uint64(le32(b[4:]))<<32 }

// scratch holds per-goroutine decode buffers.
type scratch struct {
	bufs [][]float64 // BlockSize each
	in   [][]float64 // views handed to kernels
	out  []float64
}

var scratchPool = sync.Pool{New: func() any { return &scratch{out: make([]float64, BlockSize)} }}

func getScratch(n int) *scratch {
	s := scratchPool.Get().(*scratch)
	for len(s.bufs) < n {
		s.bufs = append(s.bufs, make([]float64, BlockSize))
	}
	s.in = s.in[:0]
	for i := range n {
		s.in = append(s.in, s.bufs[i])
	}
	return s
}

// decode fills s.in[i] with elements [lo, lo+m) of each input (nil inputs
// are skipped: nothing reads them).
func (s *scratch) decode(ins []*Input, lo, m int) error {
	for i, in := range ins {
		s.in[i] = s.bufs[i][:m]
		if in == nil {
			continue
		}
		if err := in.Decode(s.in[i], lo); err != nil {
			return err
		}
	}
	return nil
}

// Workers returns how many goroutines a pass over this tensor uses.
func (t *TensorJob) Workers() int {
	w := t.workers
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	runs := (t.N + runBlocks*BlockSize - 1) / (runBlocks * BlockSize)
	return max(1, min(w, runs))
}

// Pass streams over the whole tensor once: fn(w, lo, in) is called for
// every block of at most BlockSize elements starting at element lo, with
// in[i] the decoded values of ins[i]; w < Workers() identifies the calling
// goroutine (for per-worker state). Blocks are processed concurrently and
// in no particular order. The first error (from fn, from decoding, or the
// context's) stops the pass.
func (t *TensorJob) Pass(ctx context.Context, ins []*Input, fn func(w, lo int, in [][]float64) error) error {
	return t.pass(ctx, ins, 1, fn)
}

// pass visits every stride-th block (a sample of the tensor when stride >
// 1).
func (t *TensorJob) pass(ctx context.Context, ins []*Input, stride int, fn func(w, lo int, in [][]float64) error) error {
	n := t.N
	workers := t.Workers()
	run := runBlocks * BlockSize * stride
	var next atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() { first = err; cancel() })
	}
	work := func(w int) {
		s := getScratch(len(ins))
		defer scratchPool.Put(s)
		for {
			start := int(next.Add(int64(run))) - run
			if start >= n {
				return
			}
			if err := ctx.Err(); err != nil {
				fail(err)
				return
			}
			for lo := start; lo < min(start+run, n); lo += BlockSize * stride {
				m := min(BlockSize, n-lo)
				if err := s.decode(ins, lo, m); err != nil {
					fail(err)
					return
				}
				if err := fn(w, lo, s.in); err != nil {
					fail(err)
					return
				}
				processed.Add(int64(m))
			}
		}
	}
	if workers == 1 {
		work(0)
	} else {
		// a fault or panic in a worker (reads of the mapped inputs run
		// inside Guard; anything else is a bug) is raised again here, on
		// the caller's goroutine, where the writer turns it into an error
		var g fault.Group
		for w := range workers {
			g.Go(func() { work(w) })
		}
		g.Wait()
	}
	return first
}

// Blocks runs a pass in which fn reduces every block (elements lo,
// lo+1, ...) to width numbers (acc is zeroed for each block), and returns
// them block by block:
// out[b*width : (b+1)*width] for the block starting at element b*BlockSize.
// Combining them in block order gives results that depend neither on the
// number of goroutines nor on how the output is chunked.
func (t *TensorJob) Blocks(ctx context.Context, ins []*Input, width int, fn func(lo int, in [][]float64, acc []float64) error) ([]float64, error) {
	nb := (t.N + BlockSize - 1) / BlockSize
	out := make([]float64, nb*width)
	err := t.Pass(ctx, ins, func(_, lo int, in [][]float64) error {
		b := lo / BlockSize
		return fn(lo, in, out[b*width:(b+1)*width])
	})
	return out, err
}

// Sums returns width sums over the tensor: fn adds one block's
// contributions into acc, and the block sums are added in block order
// (see Blocks), so the sums are reproducible bit for bit.
func (t *TensorJob) Sums(ctx context.Context, ins []*Input, width int, fn func(lo int, in [][]float64, acc []float64) error) ([]float64, error) {
	blocks, err := t.Blocks(ctx, ins, width, fn)
	if err != nil {
		return nil, err
	}
	total := make([]float64, width)
	for b := 0; b < len(blocks); b += width {
		for s := range width {
			total[s] += blocks[b+s]
		}
	}
	return total, nil
}

// elementwise computes elements [lo, lo+n) of an Fn kernel's output and
// encodes them, rounded once, into dst (dtype dt); or, with dst nil, into
// out64.
func elementwise(ctx context.Context, k *Kernel, lo, n int, dt tensors.DType, dst []byte, out64 []float64) error {
	s := getScratch(len(k.Inputs))
	defer scratchPool.Put(s)
	es := dt.Bits() / 8
	for b := 0; b < n; b += BlockSize {
		if b%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		m := min(BlockSize, n-b)
		if err := s.decode(k.Inputs, lo+b, m); err != nil {
			return err
		}
		processed.Add(int64(m))
		if dst == nil {
			k.Fn(lo+b, s.in, out64[b:b+m])
			continue
		}
		out := s.out[:m]
		k.Fn(lo+b, s.in, out)
		if err := encode64(dst[b*es:(b+m)*es], out, dt); err != nil {
			return err
		}
	}
	return nil
}

// runWhole computes a whole tensor in memory (the slice API): elementwise
// kernels only.
func runWhole(ctx context.Context, k *Kernel, n int, dst []float32) error {
	if k.Done != nil {
		defer k.Done()
	}
	out := make([]float64, n)
	if err := elementwise(ctx, k, 0, n, tensors.F64, nil, out); err != nil {
		return err
	}
	for i, v := range out {
		dst[i] = float32(v)
	}
	return nil
}

// memJob returns a TensorJob over values in memory (the slice API).
func memJob(name string, n int) *TensorJob {
	return &TensorJob{Job: &Job{Report: &Report{}, Plan: &Plan{}}, Name: name, Shape: []int64{int64(n)}, N: n, DType: tensors.F32}
}
