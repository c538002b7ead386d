package fsafe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// ConflictError reports an output that would destroy an input (or another
// output): it is the same file, a directory containing it, or a path inside
// it. Files are compared by device and inode, so a symbolic link, a hard
// link or a bind mount of an input is recognised as that input.
type ConflictError struct {
	Output, OutputRole string
	Other, OtherRole   string
	// Relation is "is", "contains" or "is inside".
	Relation string
	// BothOutputs is set when Other is another output, not an input.
	BothOutputs bool
}

func (e *ConflictError) Error() string {
	what := "the input"
	tail := "refusing to overwrite an input"
	if e.BothOutputs {
		what, tail = "the output", "two outputs may not overlap"
	}
	rel := e.Relation
	if rel == "is" && filepath.Clean(e.Output) != filepath.Clean(e.Other) {
		rel = "is (the same file as)"
	}
	return fmt.Sprintf("output %s%s %s %s %s%s: %s", e.Output, roleSuffix(e.OutputRole), rel, what, e.Other, roleSuffix(e.OtherRole), tail)
}

// ExistsError reports an output that exists and may only be replaced with
// --force.
type ExistsError struct {
	Path string
	Role string
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("output %s%s already exists (use --force to replace it)", e.Path, roleSuffix(e.Role))
}

func roleSuffix(role string) string {
	if role == "" {
		return ""
	}
	return " (" + role + ")"
}

// fileID identifies a file independently of the path used to reach it.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, true
}

// path is one declared input or output.
type path struct {
	role   string
	name   string
	exists bool
	isDir  bool
	id     fileID
	// chain holds the identities of the path's existing directory
	// ancestors (after resolving symbolic links), nearest first.
	chain []fileID
}

// Registry holds every path one command run reads (inputs) and writes
// (outputs). Declare them all, then Check once, before any work starts.
// Inputs are checked as they are declared: each must exist and be a regular
// file or a directory (a FIFO, device or socket is refused before it is
// opened). Check then refuses any output that is, contains, or sits inside an
// input or another output, or that exists and is not a regular file or a
// directory, or that exists without Force; and it cleans the temporaries a
// killed earlier run left next to each output.
type Registry struct {
	// Force allows replacing existing outputs.
	Force bool
	// KeepTemps leaves the temporaries of killed runs in place (a resumed
	// write picks them up), reporting them instead of removing them.
	KeepTemps bool

	ins, outs []*path
}

// Input declares input paths; empty strings are ignored. role says what the
// path was given as ("MODEL", "--calib", ...) for messages.
func (r *Registry) Input(role string, paths ...string) error {
	for _, p := range paths {
		if p == "" || r.hasInput(p) {
			continue
		}
		if _, err := StatInput(p); err != nil {
			var k *KindError
			if errors.As(err, &k) {
				k.Role = role
				return k
			}
			return fmt.Errorf("%s%s: %w", p, roleSuffix(role), unwrapPath(err))
		}
		in, err := describe(role, p)
		if err != nil {
			return err
		}
		r.ins = append(r.ins, in)
	}
	return nil
}

// InputIfExists declares an input path only when it exists (a file a command
// reads if present, such as a model's config.json).
func (r *Registry) InputIfExists(role, p string) error {
	if _, err := os.Stat(p); err != nil {
		return nil
	}
	return r.Input(role, p)
}

func (r *Registry) hasInput(p string) bool {
	return slices.ContainsFunc(r.ins, func(x *path) bool { return x.name == p })
}

// Output declares an output path (empty strings are ignored). It is
// examined by Check.
func (r *Registry) Output(role, p string) {
	if p != "" {
		r.outs = append(r.outs, &path{role: role, name: p})
	}
}

// Inputs returns the declared input paths, in declaration order.
func (r *Registry) Inputs() []string {
	out := make([]string, len(r.ins))
	for i, p := range r.ins {
		out[i] = p.name
	}
	return out
}

// Check verifies the declared outputs against the inputs and each other,
// then cleans (or with KeepTemps lists) the temporaries left next to each
// output by killed runs. The notes say what was cleaned or restored.
func (r *Registry) Check() (notes []string, err error) {
	for _, o := range r.outs {
		d, err := describe(o.role, o.name)
		if err != nil {
			return nil, err
		}
		*o = *d
	}
	for i, o := range r.outs {
		if err := checkOne(o, r.ins, r.Force); err != nil {
			return nil, err
		}
		for _, o2 := range r.outs[:i] {
			if rel := relation(o, o2); rel != "" {
				return nil, &ConflictError{Output: o.name, OutputRole: o.role, Other: o2.name, OtherRole: o2.role, Relation: rel, BothOutputs: true}
			}
		}
	}
	for _, o := range r.outs {
		n, err := CleanStale(o.name, r.KeepTemps)
		notes = append(notes, n...)
		if err != nil {
			return notes, err
		}
	}
	return notes, nil
}

// CheckOutput checks one output against inputs: the library-level form of
// Registry.Check (without the temporaries' cleanup).
func CheckOutput(out string, inputs []string, force bool) error {
	if out == "" {
		return errors.New("no output path given")
	}
	o, err := describe("", out)
	if err != nil {
		return err
	}
	var ins []*path
	for _, in := range inputs {
		if in == "" {
			continue
		}
		p, err := describe("", in)
		if err != nil {
			return err
		}
		if p.exists {
			ins = append(ins, p)
		}
	}
	return checkOne(o, ins, force)
}

func checkOne(o *path, ins []*path, force bool) error {
	if err := refuseWorkingDir(o); err != nil {
		return err
	}
	for _, in := range ins {
		if rel := relation(o, in); rel != "" {
			return &ConflictError{Output: o.name, OutputRole: o.role, Other: in.name, OtherRole: in.role, Relation: rel}
		}
	}
	if o.exists {
		st, err := os.Stat(o.name)
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() && !st.IsDir() {
			return &KindError{Path: o.name, Role: o.role, Mode: st.Mode(), Want: "a regular file or a directory (wtool replaces outputs; it never writes into special files)", Output: true}
		}
		if !force {
			return &ExistsError{Path: o.name, Role: o.role}
		}
	}
	return nil
}

// refuseWorkingDir refuses an output that is the working directory or one
// of its ancestors: replacing it would pull the directory out from under
// the user's shell.
func refuseWorkingDir(o *path) error {
	if !o.exists || !o.isDir {
		return nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil
	}
	w, err := describe("", wd)
	if err != nil || !w.exists {
		return nil
	}
	if w.id == o.id || slices.Contains(w.chain, o.id) {
		return fmt.Errorf("output %s%s is the current directory or contains it: give a new directory name", o.name, roleSuffix(o.role))
	}
	return nil
}

// relation says how output o overlaps path p: "is", "contains", "is
// inside", or "" when they are unrelated.
func relation(o, p *path) string {
	if o.exists {
		if o.id == p.id && p.exists {
			return "is"
		}
		if o.isDir && slices.Contains(p.chain, o.id) {
			return "contains"
		}
	}
	if p.exists && p.isDir && slices.Contains(o.chain, p.id) {
		return "is inside"
	}
	if !o.exists && !p.exists { // two outputs to be: compare their paths
		a, b := filepath.Clean(absOrSame(o.name)), filepath.Clean(absOrSame(p.name))
		switch {
		case a == b:
			return "is"
		case strings.HasPrefix(b, a+string(filepath.Separator)):
			return "contains"
		case strings.HasPrefix(a, b+string(filepath.Separator)):
			return "is inside"
		}
	}
	return ""
}

func absOrSame(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// describe records a path's identity and those of its directory ancestors,
// resolving symbolic links. A path that does not exist yet is described by
// its longest existing prefix.
func describe(role, p string) (*path, error) {
	out := &path{role: role, name: p}
	abs, err := filepath.Abs(p)
	if err != nil {
		return nil, err
	}
	// the longest prefix that exists, symbolic links resolved
	real, rest := abs, ""
	for {
		if r, err := filepath.EvalSymlinks(real); err == nil {
			real = r
			break
		}
		parent := filepath.Dir(real)
		if parent == real {
			break
		}
		rest = filepath.Join(filepath.Base(real), rest)
		real = parent
	}
	if rest == "" {
		st, err := os.Stat(real)
		if err == nil {
			out.exists = true
			out.isDir = st.IsDir()
			out.id, _ = idOf(st)
		}
		real = filepath.Dir(real)
	}
	// ancestors: directories from the nearest existing one up to the root
	for dir := real; ; {
		if st, err := os.Stat(dir); err == nil {
			if id, ok := idOf(st); ok {
				out.chain = append(out.chain, id)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return out, nil
}

// unwrapPath drops the *fs.PathError wrapper (whose message repeats the
// path) and keeps its cause.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
