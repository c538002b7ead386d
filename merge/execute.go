package merge

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Execute runs a merge plan and writes the merged checkpoint to out. Every
// floating tensor is computed chunk by chunk (checkpoint.WriteOptions.Chunks)
// directly into the writer's buffers; whole-tensor quantities come from
// extra streaming passes over the mapped inputs, so memory does not grow
// with the size of the model or of its largest tensor. opts sets the output
// layout (sharding, Force, MaxMemory); the first model's metadata and
// companion files are inherited unless opts says otherwise, and every file
// the plan reads is an input the output may not replace.
func Execute(ctx context.Context, p *Plan, out string, opts checkpoint.WriteOptions) (*Report, error) {
	m, err := p.validate()
	if err != nil {
		return nil, err
	}
	opts = withMergekitFiles(opts, p, out)
	if len(p.Slices) > 0 {
		return executeSlices(ctx, p, m, out, opts)
	}
	j, err := openJob(p, m, opts)
	if err != nil {
		return nil, err
	}
	defer j.close()
	if testHookOpened != nil {
		testHookOpened(j)
	}
	if p.Align {
		if err := j.align(ctx); err != nil {
			return nil, err
		}
	}
	mg, err := m.Start(ctx, j)
	if err != nil {
		return nil, err
	}
	if c, ok := mg.(io.Closer); ok {
		defer c.Close()
	}
	var written *checkpoint.Written
	if w, ok := mg.(Writer); ok {
		written, err = w.Write(ctx, j, out, opts)
	} else {
		written, err = j.write(ctx, mg, out, opts)
	}
	if err != nil {
		return nil, err
	}
	j.Report.Output = written
	return j.Report, nil
}

// testHookOpened, when set by a test, runs once the inputs are open.
var testHookOpened func(*Job)

func openJob(p *Plan, m Method, opts checkpoint.WriteOptions) (*Job, error) {
	j := &Job{Plan: p, Method: m, BaseIndex: -1, Report: &Report{Method: p.Method}, MaxMemory: opts.MaxMemory}
	if j.MaxMemory <= 0 {
		j.MaxMemory = checkpoint.DefaultMaxMemory()
	}
	ok := false
	defer func() {
		if !ok {
			j.close()
		}
	}()
	for _, mi := range p.Models {
		mm, err := checkpoint.Open(mi.Path)
		if err != nil {
			return nil, err
		}
		j.Models = append(j.Models, mm)
		j.opened = append(j.opened, mm)
	}
	if err := j.buildVocab(); err != nil {
		return nil, err
	}
	for i, mm := range j.Models[1:] {
		if err := j.sameArchitecture(j.Models[0], mm); err != nil {
			if j.vocab == nil {
				err = vocabMismatch(err, p.Models[0].Path, p.Models[i+1].Path)
			}
			return nil, fmt.Errorf("models %s and %s differ: %w", p.Models[0].Path, p.Models[i+1].Path, err)
		}
	}
	if p.Base != "" {
		for i, mi := range p.Models {
			if mi.Path == p.Base && mi.LoRA == p.BaseLoRA {
				j.Base, j.BaseIndex = j.Models[i], i
				break
			}
		}
		if j.Base == nil {
			b, err := checkpoint.Open(p.Base)
			if err != nil {
				return nil, err
			}
			j.opened = append(j.opened, b)
			j.Base = b
			// the base must hold every tensor of the models, same shapes;
			// it may have more (those pass through, as in mergekit)
			for _, n := range j.Models[0].Names() {
				mi, _ := j.Models[0].Info(n)
				bi, ok := b.Info(n)
				if !ok {
					return nil, fmt.Errorf("tensor %q is in %s but not in the base model %s", n, j.Models[0].Path, p.Base)
				}
				if !slices.Equal(mi.Shape, bi.Shape) && !(j.vocab != nil && j.vocab.remap[n]) {
					return nil, fmt.Errorf("tensor %q has shape %v in %s but %v in the base model %s", n, mi.Shape, j.Models[0].Path, bi.Shape, p.Base)
				}
			}
		}
	}
	if p.DType != "" {
		dt, err := tensors.ParseUserDType(p.DType)
		if err != nil {
			return nil, err
		}
		if !dt.IsFloat() {
			return nil, fmt.Errorf("output dtype %s is not a floating type", dt)
		}
		j.OutDType = dt
	}
	for _, n := range j.Models[0].Names() {
		j.NumLayers = max(j.NumLayers, LayerOf(n)+1)
	}
	var loras []string
	for _, mi := range p.Models {
		loras = append(loras, mi.LoRA)
	}
	models := slices.Clone(j.Models)
	if j.Base != nil && j.BaseIndex < 0 {
		models, loras = append(models, j.Base), append(loras, p.BaseLoRA)
	}
	if err := j.openLoRAs(models, loras); err != nil {
		return nil, err
	}
	j.resolveNums()
	ok = true
	return j, nil
}

func (j *Job) close() {
	j.ahead.Wait() // read-ahead of mapped pages ends before they are unmapped
	for _, m := range j.opened {
		m.Close()
	}
}

// WriteOptions completes opts for an output derived from the job's first
// model: its metadata and companion files, and every file the plan reads as
// an input the output must not replace.
func (j *Job) WriteOptions(opts checkpoint.WriteOptions) (checkpoint.WriteOptions, error) {
	opts, err := j.Models[0].DefaultWriteOptions(opts)
	if err != nil {
		return opts, err
	}
	for _, m := range j.opened[1:] {
		opts.Inputs = append(append(opts.Inputs, m.Path), m.Files()...)
	}
	opts.Inputs = append(opts.Inputs, j.Plan.Inputs()...)
	opts.AllowNonFinite = opts.AllowNonFinite || j.Plan.AllowNonFinite
	return j.withVocabFiles(opts)
}

// entries lists the output: the first model's tensors (floating ones in the
// output dtype), then the base's tensors no model has (passed through).
func (j *Job) entries() []safetensors.Entry {
	first := j.Models[0]
	out := make([]safetensors.Entry, 0, len(first.Names()))
	for _, e := range first.Entries() {
		if e.DType.IsFloat() && j.OutDType != 0 {
			e.DType = j.OutDType
		}
		out = append(out, j.vocabShape(e))
	}
	if j.Base != nil && j.BaseIndex < 0 {
		for _, e := range j.Base.Entries() {
			if !first.Has(e.Name) {
				out = append(out, e)
				if j.baseOnly == nil {
					j.baseOnly = map[string]bool{}
				}
				j.baseOnly[e.Name] = true
			}
		}
	}
	return out
}

// write streams the merge of every tensor into out.
func (j *Job) write(ctx context.Context, mg Merger, out string, opts checkpoint.WriteOptions) (*checkpoint.Written, error) {
	opts, err := j.WriteOptions(opts)
	if err == nil {
		opts, err = j.Models[0].WithDType(opts, j.OutDType) // config.json's torch_dtype
	}
	if err != nil {
		return nil, err
	}
	entries := j.entries()
	// the writer asks for every tensor's ChunkFunc in the order it writes
	// them: a tensor's preparation reads the next one's inputs ahead
	var order []*tensorState
	opts.Chunks = func(e safetensors.Entry) checkpoint.ChunkFunc {
		// the first model's floating tensors (entries keep non-float dtypes)
		if !e.DType.IsFloat() || j.baseOnly[e.Name] {
			return nil
		}
		s := &tensorState{j: j, mg: mg, e: e, order: &order, index: len(order)}
		order = append(order, s)
		size, _ := tensors.ByteSize(e.DType, e.Shape)
		es := int64(e.DType.Bits() / 8)
		chunk := int64(checkpoint.ChunkSize) / es * es
		s.left.Store((size + chunk - 1) / chunk)
		return s.chunk
	}
	first := j.Models[0]
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		info, inModels := first.Info(e.Name)
		switch {
		case !inModels: // only in the base
			return j.Base.Passthrough()(ctx, e)
		case !info.DType.IsFloat(): // integers and narrow floats: the first model's
			return first.Passthrough()(ctx, e)
		}
		// a floating tensor with no elements
		return &tensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: []byte{}}, nil, nil
	}
	return checkpoint.Write(ctx, out, entries, produce, opts)
}

// tensorJob builds the TensorJob of an output entry.
func (j *Job) tensorJob(e safetensors.Entry) (*TensorJob, error) {
	n, _ := tensors.NumElements(e.Shape)
	t := &TensorJob{Job: j, Name: e.Name, Shape: e.Shape, N: int(n), Depth: Depth(e.Name, j.NumLayers), DType: e.DType}
	in := func(m *checkpoint.Model) (*Input, error) {
		if j.dry { // Describe: the tensors as stored
			return j.input(m, e.Name)
		}
		if j.vocab != nil && j.vocab.remap[e.Name] {
			return j.vocabInput(m, e.Name)
		}
		if ls, ok := j.loras[m]; ok {
			if lm, ok := ls.byTensor[e.Name]; ok {
				return j.loraInput(m, ls, lm, e.Name)
			}
			if lm, ok := ls.bias[e.Name]; ok {
				return j.loraBiasInput(m, ls, lm, e.Name)
			}
			if x, ok := ls.saved[e.Name]; ok {
				return j.loraSavedInput(m, ls, x, e.Name)
			}
		}
		return j.input(m, e.Name)
	}
	for _, m := range j.Models {
		x, err := in(m)
		if err != nil {
			return nil, err
		}
		t.Models = append(t.Models, x)
	}
	if j.Base != nil {
		if j.BaseIndex >= 0 {
			t.Base = t.Models[j.BaseIndex]
		} else {
			x, err := in(j.Base)
			if err != nil {
				return nil, err
			}
			t.Base = x
		}
	}
	if err := j.alignInputs(t); err != nil {
		return nil, err
	}
	return t, nil
}

// input returns the named tensor of a model as an Input.
func (j *Job) input(m *checkpoint.Model, name string) (*Input, error) {
	x, err := m.Tensor(name)
	if err != nil {
		return nil, err
	}
	in := &Input{Tensor: name, DType: x.DType, Shape: x.Shape, Data: x.Data, allowNonFinite: j.Plan.AllowNonFinite, model: m}
	if !x.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q is %s, not a floating type", in.FileName(), name, x.DType)
	}
	return in, nil
}

// prefetchMin is the tensor size from which input pages are prefetched and
// released explicitly (below it the system calls cost more than they save).
const prefetchMin = 1 << 20

// tensorState is one output tensor being merged chunk by chunk.
type tensorState struct {
	j     *Job
	mg    Merger
	e     safetensors.Entry
	once  sync.Once
	k     *Kernel
	t     *TensorJob
	err   error
	left  atomic.Int64 // chunks still to fill
	order *[]*tensorState
	index int
	read  sync.Once // its inputs' pages mapped ahead
	// build, if set, makes the TensorJob (a sliced merge's renamed
	// inputs), and srcs are the inputs' tensor names in j.opened's order
	// ("" where absent), for reading ahead
	build func() (*TensorJob, error)
	srcs  []string
}

// readAhead maps the pages of the tensor's inputs (those of at least
// prefetchMin bytes), every input at once; it runs once, ahead of the
// tensor's preparation (from the previous tensor's) or at its start.
func (s *tensorState) readAhead() {
	s.read.Do(func() {
		var ms []*checkpoint.Model
		var names []string
		for i, m := range s.j.opened {
			name := s.e.Name
			if s.srcs != nil {
				name = s.srcs[i]
			}
			if info, ok := m.Info(name); ok && info.Size >= prefetchMin {
				ms, names = append(ms, m), append(names, name)
			}
		}
		var wg sync.WaitGroup
		for i, m := range ms {
			wg.Add(1)
			go func() { // a hint: the pages are read, nothing else is
				defer wg.Done()
				m.Prefetch(names[i])
			}()
		}
		wg.Wait()
	})
}

func (s *tensorState) prepare(ctx context.Context) {
	var t *TensorJob
	var err error
	if s.build != nil {
		t, err = s.build()
	} else {
		t, err = s.j.tensorJob(s.e)
	}
	if err != nil {
		s.err = err
		return
	}
	s.t = t
	s.readAhead()
	if next := s.index + 1; next < len(*s.order) {
		s.j.ahead.Add(1)
		go func() {
			defer s.j.ahead.Done()
			(*s.order)[next].readAhead()
		}()
	}
	k, err := s.mg.Tensor(ctx, t)
	k = affineAsFn(k)
	if err == nil && (k == nil || (k.Coef == nil && k.Fn == nil && k.Chunk == nil)) {
		err = fmt.Errorf("merge method %s gave no kernel", s.j.Plan.Method)
	}
	if err != nil {
		if !strings.Contains(err.Error(), strconv.Quote(s.e.Name)) { // name the tensor once
			err = fmt.Errorf("tensor %q: %w", s.e.Name, err)
		}
		s.err = err
		return
	}
	s.k = k
}

func (s *tensorState) chunk(ctx context.Context, off int64, dst []byte) error {
	s.once.Do(func() { s.prepare(ctx) })
	if s.err != nil {
		return s.err
	}
	defer func() {
		if s.left.Add(-1) == 0 {
			s.finish()
		}
	}()
	k := s.k
	es := s.e.DType.Bits() / 8
	lo, n := int(off)/es, len(dst)/es
	switch {
	case k.Chunk != nil:
		return k.Chunk(ctx, off, dst)
	case k.Coef != nil:
		return affineChunk(ctx, k, s.e.DType, lo, n, dst)
	}
	return elementwise(ctx, k, lo, n, s.e.DType, dst, nil)
}

// finish runs after the tensor's last chunk.
func (s *tensorState) finish() {
	if s.k.Done != nil {
		s.k.Done()
	}
	if t := s.t; t != nil && len(t.Models[0].Data) >= prefetchMin {
		for _, in := range append(slices.Clone(t.Models), t.Base) {
			if in != nil && in.model != nil {
				in.model.Release(in.Tensor)
			}
		}
	}
	s.k, s.t = nil, nil
}
