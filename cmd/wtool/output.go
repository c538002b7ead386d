package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/tensors"
)

// outputFlags are the flags of every command that writes a checkpoint.
type outputFlags struct {
	out            string
	maxShardSize   string
	force          bool
	noCopy         bool
	part           string
	resume         bool
	maxMemory      string
	allowNonFinite bool
}

func (o *outputFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.out, "output", "o", "", "output: a directory (Hugging Face layout) or a file ending in .safetensors (required)")
	f.StringVar(&o.maxShardSize, "max-shard-size", "5GB", "largest shard of a directory output (decimal units: 500MB, 5GB; binary: 2GiB)")
	f.BoolVar(&o.force, "force", false, "replace OUTPUT if it exists (never an input)")
	f.BoolVar(&o.noCopy, "no-copy-files", false, "do not copy config.json, tokenizer and other non-weight files into a directory output")
	f.StringVar(&o.part, "part", "", "K/N: compute and write only part K of N of a directory output into OUTPUT.parts; 'wtool finalize OUTPUT' assembles it (docs/distributed.md)")
	f.BoolVar(&o.resume, "resume", false, "continue from the completed shards a killed run of the same command left, after checking them; an interrupted run keeps its completed shards")
	f.StringVar(&o.maxMemory, "max-memory", "", fmt.Sprintf("budget for tensors computed ahead of the writer (default: an eighth of this machine's memory, %s)", checkpoint.FormatSize(checkpoint.DefaultMaxMemory())))
	f.BoolVar(&o.allowNonFinite, "allow-nonfinite", false, "write NaN/Inf values (computed, overflowing the output dtype, or copied from an input) instead of failing")
	cmd.MarkFlagRequired("output")
}

// options turns the flags into write options; inputs are the registry's.
func (o *outputFlags) options(cmd *cobra.Command, g *globals) (checkpoint.WriteOptions, error) {
	opts := checkpoint.WriteOptions{Force: o.force, Resume: o.resume, AllowNonFinite: o.allowNonFinite}
	if checkpoint.IsSingleFile(o.out) {
		if cmd.Flags().Changed("max-shard-size") {
			return opts, usageErrorf("--max-shard-size needs a directory output; %s is a single file", o.out)
		}
		if o.part != "" {
			return opts, usageErrorf("--part needs a directory output; %s is a single file", o.out)
		}
	} else {
		n, err := checkpoint.ParseSize(o.maxShardSize)
		if err != nil {
			return opts, usageErrorf("--max-shard-size: %v", err)
		}
		opts.MaxShardSize = n
	}
	if o.part != "" {
		p, err := checkpoint.ParsePart(o.part)
		if err != nil {
			return opts, usageErrorf("--part: %v", err)
		}
		opts.Part = p
	}
	if o.maxMemory != "" {
		n, err := checkpoint.ParseSize(o.maxMemory)
		if err != nil {
			return opts, usageErrorf("--max-memory: %v", err)
		}
		opts.MaxMemory = n
	}
	if o.noCopy {
		opts.CopyFiles = []string{}
	}
	return opts, nil
}

// registry starts the path registry of a command run writing -o.
func (o *outputFlags) registry() *fsafe.Registry {
	// a part writes OUTPUT.parts, not OUTPUT (which may exist), but OUTPUT
	// must not be an input either
	r := &fsafe.Registry{Force: o.force || o.part != "", KeepTemps: o.resume}
	r.Output("-o", o.out)
	return r
}

// declareModel declares a model path as an input: the path, and for an
// index file the directory holding its shards and companion files.
func declareModel(r *fsafe.Registry, role, path string) error {
	if err := r.Input(role, path); err != nil {
		return err
	}
	if strings.HasSuffix(path, ".json") {
		return r.Input(role+"'s directory", filepath.Dir(path))
	}
	return nil
}

// openInput starts a command that writes one checkpoint from the model
// args[0]: it declares the model (as role) and the optional inputs given as
// {flag, path} pairs beside -o, checks the paths, records the inputs and
// the run's fingerprint in opts, and opens the model (the caller closes it).
func (o *outputFlags) openInput(cmd *cobra.Command, g *globals, opts *checkpoint.WriteOptions, args []string, role string, inputs ...[2]string) (*checkpoint.Model, error) {
	reg := o.registry()
	if err := declareModel(reg, role, args[0]); err != nil {
		return nil, err
	}
	for _, in := range inputs {
		if err := reg.Input(in[0], in[1]); err != nil {
			return nil, err
		}
	}
	if err := g.checkPaths(reg); err != nil {
		return nil, err
	}
	opts.Inputs, opts.Fingerprint = reg.Inputs(), fingerprint(cmd, args, reg.Inputs())
	return checkpoint.OpenContext(cmd.Context(), args[0])
}

// parseFloatDType parses a --dtype flag naming a floating-point dtype (0
// when the flag is empty: keep the model's).
func parseFloatDType(dtype string) (tensors.DType, error) {
	if dtype == "" {
		return 0, nil
	}
	dt, err := tensors.ParseUserDType(dtype)
	if err != nil || !dt.IsFloat() {
		return 0, usageErrorf("--dtype %q: want f32, f16, bf16 or f64", dtype)
	}
	return dt, nil
}

// printJSON prints v as indented JSON (what --json prints).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// checkPaths runs the registry's checks and prints what they cleaned.
func (g *globals) checkPaths(r *fsafe.Registry) error {
	notes, err := r.Check()
	for _, n := range notes {
		g.info("%s", n)
	}
	return err
}

// notes prints the notes of a write.
func (g *globals) notes(w *checkpoint.Written) {
	if w != nil {
		for _, n := range w.Notes {
			g.info("%s", n)
		}
	}
}

// nonSemanticFlags do not change what a command writes.
var nonSemanticFlags = []string{"part", "resume", "quiet", "force", "max-memory", "json", "help"}

// fingerprint identifies what a command run computes: the command, its
// arguments and flags, and the size and modification time of every input
// file, so that a resumed run or a part only joins work of the same job.
func fingerprint(cmd *cobra.Command, args []string, inputs []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", cmd.CommandPath())
	for _, a := range args {
		fmt.Fprintf(h, "arg %q\n", a)
	}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if !slices.Contains(nonSemanticFlags, f.Name) {
			fmt.Fprintf(h, "flag %s=%q\n", f.Name, f.Value.String())
		}
	})
	stamp := func(p string) {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			fmt.Fprintf(h, "input %q %d %d\n", p, st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, in := range inputs {
		st, err := os.Stat(in)
		if err != nil {
			continue
		}
		if !st.IsDir() {
			stamp(in)
			continue
		}
		entries, _ := os.ReadDir(in)
		for _, e := range entries {
			stamp(filepath.Join(in, e.Name()))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// outputHelp ends the --help of every command that writes a checkpoint.
const outputHelp = `
Safety: OUTPUT is written under a temporary name beside it (.NAME.tmp-*) and
put in place at the end, after an fsync; an existing OUTPUT is replaced only
with --force, by an atomic exchange. An error or Ctrl-C leaves nothing behind
(temporaries of a killed run are removed by the next run). OUTPUT may not be,
contain or lie inside any input (compared by device and inode). NaN and Inf
are never written unless --allow-nonfinite: not computed ones, not values
that overflow the output dtype (above 65504 in f16), and not ones copied
from an input.

Large jobs: --resume continues a killed run from the shards it completed;
--part K/N computes only part K of N of a directory output (into
OUTPUT.parts), for N processes or machines, and 'wtool finalize OUTPUT'
assembles it, byte-identical to a single run (docs/distributed.md).`

// wrote prints what a write produced.
func (g *globals) wrote(w *checkpoint.Written, what string) {
	if what != "" {
		what += ", "
	}
	if parts := filepath.Dir(w.Path); strings.HasSuffix(parts, ".parts") && strings.HasPrefix(filepath.Base(w.Path), "part-") {
		out := strings.TrimSuffix(parts, ".parts")
		g.info("wrote %s: %s%d tensors, %s in %d file(s); once every part is done, run: wtool finalize %s", w.Path, what, w.Tensors, checkpoint.FormatSize(w.TotalSize), len(w.Files), out)
		return
	}
	g.info("wrote %s: %s%d tensors, %s in %d file(s)", w.Path, what, w.Tensors, checkpoint.FormatSize(w.TotalSize), len(w.Files))
}
