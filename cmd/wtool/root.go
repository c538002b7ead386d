package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the module's build information.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
		if s.Key == "vcs.modified" && s.Value == "true" {
			v += "+dirty"
		}
	}
	return v
}

// globals holds the flags every command shares.
type globals struct {
	quiet  bool
	stderr io.Writer // where progress and informational messages go
}

func newRootCmd(stderr io.Writer) *cobra.Command {
	g := &globals{stderr: stderr}
	root := &cobra.Command{
		Use:   "wtool",
		Short: "Weight-space operations on neural network checkpoints",
		Long: `wtool reads and writes Hugging Face safetensors checkpoints (single files,
sharded directories with an index, model directories with config and tokenizer
files), streaming one tensor at a time in bounded memory, and carries every
dtype through byte-identical unless asked to convert it.

Every file a command reads is an input and every file it writes an output:
outputs are written under a temporary name and put in place atomically at
the end, never over, around or inside an input; NaN and Inf are never
written unless --allow-nonfinite; Ctrl-C stops any command within a second
and leaves nothing behind (a second Ctrl-C exits at once).

Exit codes: 0 success, 1 failure, 2 bad command line (including an output
that would overwrite an input or exists without --force), 3 validation found
problems, 70 internal error (a bug: please report it), 130 interrupted.`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "no progress bars or informational messages")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return exitError{code: exitUsage, err: fmt.Errorf("%w\nRun '%s --help' for usage.", err, c.CommandPath())}
	})
	root.AddCommand(
		newInspectCmd(g),
		newArchCmd(g),
		newValidateCmd(g),
		newConvertCmd(g),
		newStatsCmd(g),
		newEvalCmd(g),
		newResetBNCmd(g),
		newFisherCmd(g),
		newAlignCmd(g),
		newMergeCmd(g),
		newCompressCmd(g),
		newSpectrumCmd(g),
		newAdapterCmd(g),
		newFinalizeCmd(g),
		newDemoCmd(g),
	)
	return root
}

// argsBetween is cobra.RangeArgs with a usage exit code.
func argsBetween(lo, hi int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < lo || (hi >= 0 && len(args) > hi) {
			want := fmt.Sprintf("%d to %d", lo, hi)
			switch {
			case lo == hi:
				want = fmt.Sprint(lo)
			case hi < 0:
				want = fmt.Sprintf("at least %d", lo)
			}
			return usageErrorf("%s takes %s argument(s), got %d\nRun '%s --help' for usage.", c.CommandPath(), want, len(args), c.CommandPath())
		}
		return nil
	}
}

// stderrIsTerminal reports whether progress bars may be drawn.
func (g *globals) stderrIsTerminal() bool {
	f, ok := g.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// info prints an informational line to stderr unless --quiet.
func (g *globals) info(format string, args ...any) {
	if !g.quiet {
		fmt.Fprintf(g.stderr, format+"\n", args...)
	}
}
