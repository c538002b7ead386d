package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

// Problem is one finding of Validate.
type Problem struct {
	File    string // the file concerned
	Tensor  string // the tensor concerned, if any
	Err     error  // what is wrong; *safetensors.Error for format errors
	Warning bool   // a suspicious detail that does not make the model unusable
}

func (p Problem) String() string {
	msg := p.Err.Error()
	var fe *safetensors.Error
	if errors.As(p.Err, &fe) && fe.File != "" {
		return msg // already names the file (and tensor)
	}
	var b strings.Builder
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.File != "" {
		b.WriteString(p.File + ": ")
	}
	if p.Tensor != "" {
		fmt.Fprintf(&b, "tensor %q: ", p.Tensor)
	}
	b.WriteString(msg)
	return b.String()
}

// ValidateOptions control Validate.
type ValidateOptions struct {
	// CheckValues reads every floating-point tensor and reports NaN and Inf
	// values. Without it only headers are read.
	CheckValues bool
	// Progress, if set, is called with bytes checked so far and in total
	// while values are checked.
	Progress func(done, total int64)
}

// Validate checks a checkpoint completely and returns every problem found,
// rather than stopping at the first: each file's header and data extents, a
// sharded model's index against its shards (missing shard files, tensors the
// index lists that their shard lacks, shard tensors the index does not list,
// tensors in two shards, a wrong total_size) and, optionally, the values.
// The error is non-nil only when path cannot be examined at all.
func Validate(ctx context.Context, path string, opts ValidateOptions) ([]Problem, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var indexPath string
	files := []string{path}
	if st.IsDir() {
		idx, single, err := findWeights(path)
		if err != nil {
			return []Problem{{File: path, Err: err}}, nil
		}
		indexPath, files = idx, []string{single}
	} else if strings.HasSuffix(path, ".json") {
		indexPath = path
	}
	var problems []Problem
	add := func(p Problem) { problems = append(problems, p) }
	var ix *Index
	if indexPath != "" {
		ix, err = ReadIndex(indexPath)
		if err != nil {
			return []Problem{{File: indexPath, Err: err}}, nil
		}
		files = nil
		for _, s := range ix.Shards() {
			files = append(files, filepath.Join(filepath.Dir(indexPath), s))
		}
	}
	opened := map[string]*safetensors.File{}
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	where := map[string]string{} // tensor -> first shard holding it
	var total int64
	for _, p := range files {
		f, err := safetensors.Open(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && ix != nil {
				err = fmt.Errorf("shard listed in the index is missing")
			}
			add(Problem{File: p, Err: err})
			continue
		}
		opened[filepath.Base(p)] = f
		total += f.Header.DataSize
		for _, t := range f.Header.Tensors {
			if prev, dup := where[t.Name]; dup {
				add(Problem{File: p, Tensor: t.Name, Err: fmt.Errorf("also in shard %s (duplicate across shards)", prev)})
				continue
			}
			where[t.Name] = filepath.Base(p)
		}
	}
	if ix != nil {
		for _, name := range slices.Sorted(maps.Keys(ix.WeightMap)) {
			shard := ix.WeightMap[name]
			f, ok := opened[shard]
			if !ok {
				continue // the shard's own problem is reported
			}
			if _, ok := f.Header.Lookup(name); !ok {
				add(Problem{File: f.Path, Tensor: name, Err: fmt.Errorf("listed in the index for this shard, but not in it")})
			}
		}
		for _, shard := range slices.Sorted(maps.Keys(opened)) {
			for _, t := range opened[shard].Header.Tensors {
				if got, ok := ix.WeightMap[t.Name]; !ok {
					add(Problem{File: opened[shard].Path, Tensor: t.Name, Err: fmt.Errorf("in this shard but not listed in the index")})
				} else if got != shard && where[t.Name] == shard {
					add(Problem{File: opened[shard].Path, Tensor: t.Name, Err: fmt.Errorf("in this shard, but the index says %s", got)})
				}
			}
		}
		if ix.TotalSize != 0 && len(problems) == 0 && ix.TotalSize != total {
			add(Problem{File: indexPath, Warning: true, Err: fmt.Errorf("metadata.total_size is %d, the tensors take %d bytes", ix.TotalSize, total)})
		}
		if entries, err := os.ReadDir(filepath.Dir(indexPath)); err == nil {
			for _, e := range entries {
				n := e.Name()
				if strings.HasSuffix(n, ".safetensors") && !strings.HasPrefix(n, ".") && !slices.Contains(ix.Shards(), n) {
					add(Problem{File: filepath.Join(filepath.Dir(indexPath), n), Warning: true, Err: fmt.Errorf("this .safetensors file is not referenced by the index %s (a stale shard?)", filepath.Base(indexPath))})
				}
			}
		}
	}
	if opts.CheckValues {
		if err := checkValues(ctx, opened, total, opts.Progress, add); err != nil {
			return problems, err
		}
	}
	return problems, nil
}

func checkValues(ctx context.Context, files map[string]*safetensors.File, total int64, progress func(int64, int64), add func(Problem)) error {
	var done int64
	var buf []float64
	for _, shard := range slices.Sorted(maps.Keys(files)) {
		f := files[shard]
		for _, info := range f.Header.Tensors {
			if err := ctx.Err(); err != nil {
				return err
			}
			if info.DType.IsFloat() {
				x, err := f.Tensor(info.Name)
				if err != nil {
					add(Problem{File: f.Path, Tensor: info.Name, Err: err})
					continue
				}
				nan, inf := 0, 0
				const chunk = 1 << 20
				n := int(info.NumElements())
				w := info.DType.Bits() / 8
				err = safetensors.Guard(f.Path, info.Name, func() error {
					for lo := 0; lo < n; lo += chunk {
						if err := ctx.Err(); err != nil {
							return err
						}
						hi := min(lo+chunk, n)
						buf = slices.Grow(buf[:0], hi-lo)[:hi-lo]
						_ = tensors.DecodeFloat64(buf, x.Data[lo*w:hi*w], info.DType)
						for _, v := range buf {
							if v != v {
								nan++
							} else if math.IsInf(v, 0) {
								inf++
							}
						}
					}
					return nil
				})
				if err != nil {
					return err // the file changed under wtool, or ctx is done
				}
				f.Release(info.Name)
				if nan+inf > 0 {
					add(Problem{File: f.Path, Tensor: info.Name, Err: fmt.Errorf("%d NaN and %d infinite values", nan, inf)})
				}
			}
			done += info.Size()
			if progress != nil {
				progress(done, total)
			}
		}
	}
	return nil
}
