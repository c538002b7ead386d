// Command wtool operates on the weights of neural-network checkpoints:
// inspecting, validating and converting safetensors models, merging,
// aligning, compressing and initialising adapters. Run `wtool --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK          = 0   // success
	exitFailure     = 1   // the operation failed
	exitUsage       = 2   // bad command line
	exitInvalid     = 3   // validate found problems
	exitInterrupted = 130 // cancelled by Ctrl-C or SIGTERM; nothing was written
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if path := os.Getenv("WTOOL_CPUPROFILE"); path != "" { // for developers
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	root := newRootCmd(stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee exitError
	switch {
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintln(stderr, "wtool:", ee.err)
		}
		return ee.code
	case isCobraUsageError(err):
		fmt.Fprintf(stderr, "wtool: %v\nRun 'wtool --help' for usage.\n", err)
		return exitUsage
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "wtool: interrupted; no output was written")
		return exitInterrupted
	}
	fmt.Fprintln(stderr, "wtool:", err)
	return exitFailure
}

// exitError carries a specific exit code (and optionally a message).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// isCobraUsageError recognises the command-line errors cobra reports without
// going through the flag error function.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "required flag", "if any flags in the group", "accepts "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func usageErrorf(format string, args ...any) error {
	return exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}
