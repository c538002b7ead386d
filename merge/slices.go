package merge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// A sliced merge (Plan.Slices, mergekit's slices:) writes, in order: the
// tensors before the layers (embeddings: names with "embed", "wte" or
// "wpe") from the first slice's sources, the layers of every slice
// renumbered from 0, and the other tensors outside the layers (final norm,
// output head) from the last slice's sources; config.json's
// num_hidden_layers becomes the new layer count. Each slice is a
// whole-model merge of its sources (its own Job and Merger), whose tensors
// are read under their source names; parameters are evaluated at the
// output tensor's name and at the layer's depth within its slice, the
// tensors outside the layers at t = 0, as mergekit does.

// isPreLayer reports whether a tensor outside the layers comes before them
// (token and position embeddings).
func isPreLayer(name string) bool {
	for _, w := range []string{"embed", "wte", "wpe"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// renumberLayer replaces the layer index LayerOf finds in name by n.
func renumberLayer(name string, n int) string {
	for start := 0; start < len(name); {
		end := strings.IndexByte(name[start:], '.')
		if end < 0 {
			return name
		}
		end += start
		if slices.Contains(layerWords, name[start:end]) {
			rest := name[end+1:]
			if dot := strings.IndexByte(rest, '.'); dot > 0 {
				if _, ok := layerNumber(rest[:dot]); ok {
					return name[:end+1] + strconv.Itoa(n) + rest[dot:]
				}
			}
		}
		start = end + 1
	}
	return name
}

// sliceTensor is one output tensor of a sliced merge.
type sliceTensor struct {
	e     safetensors.Entry // output name, shape, output dtype
	slice int
	// layer is the output tensor's layer within its slice (-1 outside the
	// layers)
	layer int
}

// sourceName is the name of the tensor in source k of the slice.
func (p *Plan) sourceName(st sliceTensor, k int) string {
	if st.layer < 0 {
		return st.e.Name
	}
	return renumberLayer(st.e.Name, p.Slices[st.slice].Sources[k].Layers[0]+st.layer)
}

func executeSlices(ctx context.Context, p *Plan, m Method, out string, opts checkpoint.WriteOptions) (*Report, error) {
	var jobs []*Job
	defer func() {
		for _, j := range jobs {
			j.close()
		}
	}()
	var mgs []Merger
	for i := range p.Slices {
		sp := p.slicePlan(i)
		if _, err := sp.validate(); err != nil {
			return nil, fmt.Errorf("slice %d: %w", i+1, err)
		}
		j, err := openJob(sp, m, opts)
		if err != nil {
			return nil, fmt.Errorf("slice %d: %w", i+1, err)
		}
		jobs = append(jobs, j)
		mg, err := m.Start(ctx, j)
		if err != nil {
			return nil, fmt.Errorf("slice %d: %w", i+1, err)
		}
		if c, ok := mg.(io.Closer); ok {
			defer c.Close()
		}
		if _, ok := mg.(Writer); ok {
			return nil, fmt.Errorf("merge method %s writes whole models: it cannot merge slices", p.Method)
		}
		mgs = append(mgs, mg)
	}
	rep := &Report{Method: p.Method}
	for _, j := range jobs {
		for _, n := range j.Report.Notes {
			if !slices.Contains(rep.Notes, n) {
				rep.Notes = append(rep.Notes, n)
			}
		}
	}
	layout, err := sliceLayout(p, jobs)
	if err != nil {
		return nil, err
	}
	j0 := jobs[0]
	opts, err = j0.WriteOptions(opts)
	if err == nil {
		opts, err = j0.Models[0].WithDType(opts, j0.OutDType)
	}
	if err == nil {
		opts, err = withNumLayers(opts, j0.Models[0], p.NumLayers())
	}
	if err != nil {
		return nil, err
	}
	for _, j := range jobs[1:] {
		wo, err := j.WriteOptions(checkpoint.WriteOptions{})
		if err != nil {
			return nil, err
		}
		opts.Inputs = append(opts.Inputs, wo.Inputs...)
	}
	entries := make([]safetensors.Entry, len(layout))
	byName := map[string]sliceTensor{}
	for i, st := range layout {
		entries[i] = st.e
		byName[st.e.Name] = st
	}
	var order []*tensorState
	opts.Chunks = func(e safetensors.Entry) checkpoint.ChunkFunc {
		if !e.DType.IsFloat() {
			return nil
		}
		st := byName[e.Name]
		j := jobs[st.slice]
		s := &tensorState{j: j, mg: mgs[st.slice], e: e, order: &order, index: len(order)}
		s.build = func() (*TensorJob, error) { return p.sliceTensorJob(j, st) }
		for _, om := range j.opened {
			name := ""
			for k, mm := range j.Models {
				if mm == om {
					name = p.sourceName(st, k)
				}
			}
			s.srcs = append(s.srcs, name)
		}
		order = append(order, s)
		size, _ := tensors.ByteSize(e.DType, e.Shape)
		es := int64(e.DType.Bits() / 8)
		chunk := int64(checkpoint.ChunkSize) / es * es
		s.left.Store((size + chunk - 1) / chunk)
		return s.chunk
	}
	produce := func(ctx context.Context, e safetensors.Entry) (*tensors.Tensor, func(), error) {
		st := byName[e.Name]
		if e.DType.IsFloat() { // a floating tensor with no elements
			return &tensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: []byte{}}, nil, nil
		}
		src := jobs[st.slice].Models[0]
		name := p.sourceName(st, 0)
		info, _ := src.Info(name)
		t, release, err := src.Passthrough()(ctx, safetensors.Entry{Name: name, DType: info.DType, Shape: info.Shape})
		if err != nil {
			return nil, nil, err
		}
		c := *t
		c.Name = e.Name
		return &c, release, nil
	}
	written, err := checkpoint.Write(ctx, out, entries, produce, opts)
	if err != nil {
		return nil, err
	}
	rep.Output = written
	return rep, nil
}

// sliceLayout lists the output tensors of a sliced merge, in order.
func sliceLayout(p *Plan, jobs []*Job) ([]sliceTensor, error) {
	var out []sliceTensor
	outDType := func(j *Job, e safetensors.Entry) safetensors.Entry {
		if e.DType.IsFloat() && j.OutDType != 0 {
			e.DType = j.OutDType
		}
		return e
	}
	first, last := jobs[0], jobs[len(jobs)-1]
	for _, e := range first.Models[0].Entries() {
		if LayerOf(e.Name) < 0 && isPreLayer(e.Name) {
			out = append(out, sliceTensor{e: outDType(first, e), slice: 0, layer: -1})
		}
	}
	base := 0
	for i, s := range p.Slices {
		j := jobs[i]
		src := s.Sources[0]
		byLayer := map[int][]safetensors.Entry{}
		for _, e := range j.Models[0].Entries() {
			if l := LayerOf(e.Name); l >= src.Layers[0] && l < src.Layers[1] {
				byLayer[l] = append(byLayer[l], e)
			}
		}
		for l := range s.Len() {
			es := byLayer[src.Layers[0]+l]
			if len(es) == 0 {
				return nil, fmt.Errorf("slice %d: %s has no layer %d (layer_range [%d, %d))", i+1, src.Path, src.Layers[0]+l, src.Layers[0], src.Layers[1])
			}
			for _, e := range es {
				e.Name = renumberLayer(e.Name, base+l)
				out = append(out, sliceTensor{e: outDType(j, e), slice: i, layer: l})
			}
		}
		base += s.Len()
	}
	for _, e := range last.Models[0].Entries() {
		if LayerOf(e.Name) < 0 && !isPreLayer(e.Name) {
			out = append(out, sliceTensor{e: outDType(last, e), slice: len(jobs) - 1, layer: -1})
		}
	}
	return out, nil
}

// sliceTensorJob builds the TensorJob of an output tensor of a sliced
// merge: the slice's sources' tensors under their own names.
func (p *Plan) sliceTensorJob(j *Job, st sliceTensor) (*TensorJob, error) {
	e := st.e
	n, _ := tensors.NumElements(e.Shape)
	t := &TensorJob{Job: j, Name: e.Name, Shape: e.Shape, N: int(n), DType: e.DType}
	if st.layer >= 0 {
		if l := p.Slices[st.slice].Len(); l > 1 {
			t.Depth = float64(st.layer) / float64(l-1)
		} else {
			t.Depth = 1
		}
	}
	for k, m := range j.Models {
		x, err := j.input(m, p.sourceName(st, k))
		if err != nil {
			return nil, err
		}
		if !slices.Equal(x.Shape, e.Shape) {
			return nil, fmt.Errorf("%s: tensor %q has shape %v, but %v in %s", x.FileName(), x.Tensor, x.Shape, e.Shape, j.Plan.Models[0].Path)
		}
		t.Models = append(t.Models, x)
	}
	if j.BaseIndex >= 0 {
		t.Base = t.Models[j.BaseIndex]
	}
	return t, nil
}

var numLayersKey = regexp.MustCompile(`("num_hidden_layers"\s*:\s*)(\d+)`)

// withNumLayers sets num_hidden_layers in the output's config.json (the
// first one in the file: a model's own, before a nested one).
func withNumLayers(opts checkpoint.WriteOptions, m *checkpoint.Model, n int) (checkpoint.WriteOptions, error) {
	src, ok, err := outputConfig(opts, m)
	if err != nil || !ok {
		return opts, err
	}
	loc := numLayersKey.FindSubmatchIndex(src)
	if loc == nil {
		return opts, nil
	}
	var out bytes.Buffer
	out.Write(src[:loc[4]])
	out.WriteString(strconv.Itoa(n))
	out.Write(src[loc[5]:])
	if !json.Valid(out.Bytes()) {
		return opts, fmt.Errorf("%s: config.json is not valid JSON", m.Path)
	}
	return withOutputFile(opts, "config.json", out.Bytes()), nil
}
