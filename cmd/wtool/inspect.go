package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/tensors"
)

type inspectTensor struct {
	Name       string  `json:"name"`
	DType      string  `json:"dtype"`
	Shape      []int64 `json:"shape"`
	Parameters int64   `json:"parameters"`
	Bytes      int64   `json:"bytes"`
	File       string  `json:"file"`
}

type inspectTotal struct {
	Tensors    int   `json:"tensors"`
	Parameters int64 `json:"parameters"`
	Bytes      int64 `json:"bytes"`
}

// inspectReport is the document inspect --json prints (streamed by
// writeInspectJSON, field by field, in this order).
type inspectReport struct {
	Path     string                  `json:"path"`
	Layout   string                  `json:"layout"` // "single" or "sharded"
	Files    []string                `json:"files"`
	Metadata map[string]string       `json:"metadata"`
	Tensors  []inspectTensor         `json:"tensors"`
	ByDType  map[string]inspectTotal `json:"by_dtype"`
	Total    inspectTotal            `json:"total"`
}

func newInspectCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect PATH",
		Short: "List a checkpoint's tensors, dtypes, shapes and sizes (reads headers only)",
		Long: `Inspect lists every tensor of a checkpoint with its dtype, shape, parameter
count, size in bytes and, for a sharded model, the shard holding it; then the
totals per dtype and the __metadata__. PATH is a .safetensors file, a sharded
model's index file, or a model directory.

Only the headers are read, never the tensor data, so it is instant on models of
any size. Use 'wtool validate' to check a checkpoint completely.`,
		Example: `  wtool inspect model.safetensors
  wtool inspect ./Llama-3.2-1B --json | jq '.total.parameters'`,
		Args: argsBetween(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			m, err := checkpoint.OpenContext(ctx, args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			if asJSON {
				err = writeInspectJSON(ctx, w, m)
			} else {
				err = printInspect(ctx, w, m)
			}
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return cmd
}

// inspectRows calls row for every tensor in name order, checking ctx.
func inspectRows(ctx context.Context, m *checkpoint.Model, row func(inspectTensor) error) error {
	for i := range m.Names() {
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		info := m.InfoAt(i)
		n, _ := tensors.NumElements(info.Shape)
		if err := row(inspectTensor{Name: info.Name, DType: info.DType.String(), Shape: info.Shape,
			Parameters: n, Bytes: info.Size, File: filepath.Base(info.File)}); err != nil {
			return err
		}
	}
	return nil
}

// inspectTotals sums the tensors by dtype.
func inspectTotals(m *checkpoint.Model) (map[string]inspectTotal, inspectTotal) {
	by := map[string]inspectTotal{}
	var total inspectTotal
	for i := range m.Names() {
		info := m.InfoAt(i)
		n, _ := tensors.NumElements(info.Shape)
		t := by[info.DType.String()]
		t.Tensors++
		t.Parameters += n
		t.Bytes += info.Size
		by[info.DType.String()] = t
		total.Tensors++
		total.Parameters += n
		total.Bytes += info.Size
	}
	return by, total
}

func layout(m *checkpoint.Model) string {
	if m.Index != nil {
		return "sharded"
	}
	return "single"
}

// writeInspectJSON streams the JSON report one tensor at a time (a header
// can describe a million tensors): the same document json.Encoder would
// write for an inspectReport, indented by two spaces.
func writeInspectJSON(ctx context.Context, w io.Writer, m *checkpoint.Model) error {
	by, total := inspectTotals(m)
	md := m.Metadata()
	if md == nil {
		md = map[string]string{}
	}
	field := func(indent, name string, v any, comma bool) error {
		b, err := json.MarshalIndent(v, indent, "  ")
		if err != nil {
			return err
		}
		sep := ""
		if comma {
			sep = ","
		}
		_, err = fmt.Fprintf(w, "%s%q: %s%s\n", indent, name, b, sep)
		return err
	}
	fmt.Fprintln(w, "{")
	for _, f := range []struct {
		name string
		v    any
	}{{"path", m.Path}, {"layout", layout(m)}, {"files", m.Files()}, {"metadata", md}} {
		if err := field("  ", f.name, f.v, true); err != nil {
			return err
		}
	}
	fmt.Fprint(w, `  "tensors": [`)
	first := true
	err := inspectRows(ctx, m, func(t inspectTensor) error {
		b, err := json.MarshalIndent(t, "    ", "  ")
		if err != nil {
			return err
		}
		if !first {
			fmt.Fprint(w, ",")
		}
		first = false
		_, err = fmt.Fprintf(w, "\n    %s", b)
		return err
	})
	if err != nil {
		return err
	}
	if first {
		fmt.Fprintln(w, "],")
	} else {
		fmt.Fprintln(w, "\n  ],")
	}
	if err := field("  ", "by_dtype", by, true); err != nil {
		return err
	}
	if err := field("  ", "total", total, false); err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, "}")
	return err
}

// printInspect prints the table in two streaming passes: the column
// widths, then the rows (no table is held in memory).
func printInspect(ctx context.Context, w io.Writer, m *checkpoint.Model) error {
	sharded := m.Index != nil
	head := []string{"NAME", "DTYPE", "SHAPE", "PARAMS", "BYTES"}
	if sharded {
		head = append(head, "SHARD")
	}
	cells := func(t inspectTensor) []string {
		c := []string{t.Name, t.DType, formatShape(t.Shape), fmt.Sprint(t.Parameters), checkpoint.FormatSize(t.Bytes)}
		if sharded {
			c = append(c, t.File)
		}
		return c
	}
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len(h)
	}
	err := inspectRows(ctx, m, func(t inspectTensor) error {
		for i, c := range cells(t) {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
		return nil
	})
	if err != nil {
		return err
	}
	line := func(c []string) error {
		for i, x := range c {
			if i == len(c)-1 {
				fmt.Fprintln(w, x)
				break
			}
			fmt.Fprint(w, x, strings.Repeat(" ", width[i]-utf8.RuneCountInString(x)+2))
		}
		return nil
	}
	line(head)
	if err := inspectRows(ctx, m, func(t inspectTensor) error { return line(cells(t)) }); err != nil {
		return err
	}
	by, total := inspectTotals(m)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s: %s, %d file(s)\n", m.Path, layout(m), len(m.Files()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DTYPE\tTENSORS\tPARAMS\tBYTES\t")
	for _, dt := range slices.Sorted(maps.Keys(by)) {
		t := by[dt]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", dt, t.Tensors, t.Parameters, checkpoint.FormatSize(t.Bytes))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%s\t\n", total.Tensors, total.Parameters, checkpoint.FormatSize(total.Bytes))
	tw.Flush()
	if md := m.Metadata(); len(md) > 0 {
		fmt.Fprintln(w, "metadata:")
		for _, k := range slices.Sorted(maps.Keys(md)) {
			fmt.Fprintf(w, "  %s: %s\n", k, md[k])
		}
	}
	return nil
}

func formatShape(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
