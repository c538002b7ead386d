package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

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
			m, err := checkpoint.Open(args[0])
			if err != nil {
				return err
			}
			defer m.Close()
			r := buildInspectReport(m)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			return printInspect(cmd.OutOrStdout(), r)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON report")
	return cmd
}

func buildInspectReport(m *checkpoint.Model) inspectReport {
	r := inspectReport{Path: m.Path, Layout: "single", Metadata: m.Metadata(), ByDType: map[string]inspectTotal{},
		Tensors: []inspectTensor{}}
	if m.Index != nil {
		r.Layout = "sharded"
	}
	r.Files = m.Files()
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	for _, name := range m.Names() {
		info, _ := m.Info(name)
		n, _ := tensors.NumElements(info.Shape)
		r.Tensors = append(r.Tensors, inspectTensor{Name: name, DType: info.DType.String(), Shape: info.Shape,
			Parameters: n, Bytes: info.Size, File: filepath.Base(info.File)})
		t := r.ByDType[info.DType.String()]
		t.Tensors++
		t.Parameters += n
		t.Bytes += info.Size
		r.ByDType[info.DType.String()] = t
		r.Total.Tensors++
		r.Total.Parameters += n
		r.Total.Bytes += info.Size
	}
	return r
}

func printInspect(w io.Writer, r inspectReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	sharded := r.Layout == "sharded"
	if sharded {
		fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tPARAMS\tBYTES\tSHARD")
	} else {
		fmt.Fprintln(tw, "NAME\tDTYPE\tSHAPE\tPARAMS\tBYTES")
	}
	for _, t := range r.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s", t.Name, t.DType, formatShape(t.Shape), t.Parameters, checkpoint.FormatSize(t.Bytes))
		if sharded {
			fmt.Fprintf(tw, "\t%s", t.File)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s: %s, %d file(s)\n", r.Path, r.Layout, len(r.Files))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DTYPE\tTENSORS\tPARAMS\tBYTES\t")
	for _, dt := range slices.Sorted(maps.Keys(r.ByDType)) {
		t := r.ByDType[dt]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", dt, t.Tensors, t.Parameters, checkpoint.FormatSize(t.Bytes))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%s\t\n", r.Total.Tensors, r.Total.Parameters, checkpoint.FormatSize(r.Total.Bytes))
	tw.Flush()
	if len(r.Metadata) > 0 {
		fmt.Fprintln(w, "metadata:")
		for _, k := range slices.Sorted(maps.Keys(r.Metadata)) {
			fmt.Fprintf(w, "  %s: %s\n", k, r.Metadata[k])
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
