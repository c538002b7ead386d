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
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/wtool/wtool/internal/fault"
	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/fsafe"
	"github.com/wtool/wtool/io/safetensors"
)

// Exit codes.
const (
	exitOK          = 0   // success
	exitFailure     = 1   // the operation failed
	exitUsage       = 2   // bad command line
	exitInvalid     = 3   // validate found problems
	exitInternal    = 70  // a bug (a panic): EX_SOFTWARE
	exitInterrupted = 130 // cancelled by Ctrl-C or SIGTERM; nothing was written
)

// interruptGrace is how long a command may take to stop after Ctrl-C or
// SIGTERM before wtool removes its temporaries and exits on its own (a long
// computation that cannot be cut short, a stuck system call).
const interruptGrace = 700 * time.Millisecond

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		select {
		case <-sigs: // a second Ctrl-C: stop now
		case <-time.After(interruptGrace):
		}
		fsafe.RemoveLiveTemps()
		pprof.StopCPUProfile() // a developer's profile (WTOOL_CPUPROFILE) survives the interruption
		fmt.Fprintln(os.Stderr, "wtool: interrupted; no output was written")
		os.Exit(exitInterrupted)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	if path := os.Getenv("WTOOL_CPUPROFILE"); path != "" { // for developers
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// A memory fault (a mapped input truncated under wtool) on this
	// goroutine, or one re-raised from a worker, that no Guard caught ends
	// here as an error naming the file and tensor; any other panic is a bug.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if f, ok := p.(fault.Addr); ok {
				code = report(ctx, safetensors.FaultAt(f.Addr(), "", ""), stderr)
				return
			}
			if f, ok := p.(*fault.Failure); ok {
				code = report(ctx, f.Err, stderr)
				return
			}
			pe, ok := p.(*fault.PanicError)
			if !ok {
				pe = &fault.PanicError{Value: p, Stack: debug.Stack()}
			}
			code = report(ctx, pe, stderr)
		}
	}()
	root := newRootCmd(stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return report(ctx, root.ExecuteContext(ctx), stderr)
}

// report prints err (if any) and returns the exit code it maps to.
func report(ctx context.Context, err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var (
		ee       exitError
		conflict *fsafe.ConflictError
		exists   *fsafe.ExistsError
		kind     *fsafe.KindError
		pe       *fault.PanicError
		part     *checkpoint.PartError
	)
	switch {
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintln(stderr, "wtool:", ee.err)
		}
		return ee.code
	case isCobraUsageError(err):
		fmt.Fprintf(stderr, "wtool: %v\nRun 'wtool --help' for usage.\n", err)
		return exitUsage
	case errors.As(err, &pe):
		fmt.Fprintf(stderr, "wtool: %v\nThis is a bug in wtool. Please report it with the command line and this trace:\n%s", pe, pe.Stack)
		return exitInternal
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		msg := "interrupted; no output was written"
		if strings.Contains(err.Error(), "--resume") {
			msg = "interrupted: " + err.Error()
		}
		fmt.Fprintln(stderr, "wtool:", msg)
		return exitInterrupted
	case errors.As(err, &conflict), errors.As(err, &exists):
		fmt.Fprintln(stderr, "wtool:", err)
		return exitUsage
	case errors.As(err, &kind) && kind.Output:
		fmt.Fprintln(stderr, "wtool:", err)
		return exitUsage
	case errors.As(err, &part):
		fmt.Fprintln(stderr, "wtool:", err)
		return exitFailure
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
