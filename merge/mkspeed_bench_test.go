package merge

import (
	"context"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

// methodTensor prepares the merge of one tensor by a registered method on
// the given inputs (models, then base or nil) and computes it into dst
// (BF16) chunk by chunk, as Execute does.
func methodTensor(tb testing.TB, p *Plan, shape []int64, ms []*Input, base *Input, dst []byte) {
	tb.Helper()
	if err := methodTensorErr(p, shape, ms, base, dst); err != nil {
		tb.Fatal(err)
	}
}

// methodTensorErr is methodTensor returning its error.
func methodTensorErr(p *Plan, shape []int64, ms []*Input, base *Input, dst []byte) error {
	ctx := context.Background()
	for i := range ms {
		p.Models = append(p.Models, ModelInput{Path: string(rune('a' + i))})
	}
	if base != nil {
		p.Base = "base"
	}
	m, err := p.validate()
	if err != nil {
		return err
	}
	p.Models = nil
	for i := range ms {
		p.Models = append(p.Models, ModelInput{Path: string(rune('a' + i))})
	}
	j := &Job{Plan: p, Method: m, Report: &Report{}, BaseIndex: -1}
	j.resolveNums()
	mg, err := m.Start(ctx, j)
	if err != nil {
		return err
	}
	n, _ := tensors.NumElements(shape)
	t := &TensorJob{Job: j, Name: "w", Shape: shape, N: int(n), DType: tensors.BF16, Models: ms, Base: base, workers: 1}
	k, err := mg.Tensor(ctx, t)
	if err != nil {
		return err
	}
	k = affineAsFn(k)
	chunk := checkpoint.ChunkSize / 2
	for lo := 0; lo < int(n); lo += chunk {
		m := min(chunk, int(n)-lo)
		d := dst[2*lo : 2*(lo+m)]
		switch {
		case k.Coef != nil:
			err = affineChunk(ctx, k, tensors.BF16, lo, m, d)
		case k.Fn != nil:
			err = elementwise(ctx, k, lo, m, tensors.BF16, d, nil)
		default:
			err = k.Chunk(ctx, int64(2*lo), d)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// benchMethod runs a method on the [1024, 4096] BF16 tensor of benchRows
// (two models and, with base, a base) and reports CPU time per element.
func benchMethod(b *testing.B, method string, params Params, withBase bool) {
	const rows, cols = 1024, 4096
	const n = rows * cols
	ms, base := benchInputs(n, 2)
	shape := []int64{rows, cols}
	for _, in := range append(ms, base) {
		in.Shape = shape
	}
	if !withBase {
		base = nil
	}
	dst := make([]byte, 2*n)
	b.SetBytes(n)
	c0 := cpuTime()
	defer func() { b.ReportMetric(float64(cpuTime()-c0)/float64(b.N)/n, "cpu-ns/elem") }()
	for b.Loop() {
		methodTensor(b, &Plan{Method: method, Params: params}, shape, ms, base, dst)
	}
}

// The mergekit integration's CPU-bound methods as the 8B benchmark runs
// them (README), and TIES (density 0.5), the reference, on the same
// tensor: go test -run '^$' -bench 'MK' ./merge/
func BenchmarkMKTIES(b *testing.B) {
	benchMethod(b, "ties", Params{"density": Num(0.5)}, true)
}

func BenchmarkMKSCE(b *testing.B) { benchMethod(b, "sce", nil, true) }

func BenchmarkMKSCETopk(b *testing.B) {
	benchMethod(b, "sce", Params{"select_topk": Num(0.5)}, true)
}

func BenchmarkMKBreadcrumbsTIES(b *testing.B) {
	benchMethod(b, "breadcrumbs-ties", Params{"density": Num(0.9), "gamma": Num(0.01)}, true)
}

func BenchmarkMKModelStock(b *testing.B) { benchMethod(b, "model-stock", nil, true) }

func BenchmarkMKModelStockRows(b *testing.B) {
	benchMethod(b, "model-stock", Params{"filter_wise": Flag(true)}, true)
}

func BenchmarkMKKarcher(b *testing.B) { benchMethod(b, "karcher", nil, false) }
