// Package hub resolves Hugging Face Hub model ids ("org/name[@revision]") to
// directories of the local Hugging Face cache, the way huggingface_hub finds
// cached files: $HF_HUB_CACHE (or the legacy $HUGGINGFACE_HUB_CACHE), else
// $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub; inside it models--org--name/snapshots/COMMIT,
// with branch and tag names mapped to commits by models--org--name/refs/NAME.
//
// Nothing is ever downloaded: a model that is not cached is a *NotCachedError
// that says where wtool looked and how to fetch it.
package hub

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// DefaultRevision is the revision of a reference without "@".
const DefaultRevision = "main"

// Ref is a model on the Hugging Face Hub: a repository id ("org/name" or
// "name") and a revision (a branch, a tag or a commit hash; "" means main).
type Ref struct {
	Repo     string
	Revision string
}

// String returns "repo" or "repo@revision".
func (r Ref) String() string {
	if r.Revision == "" {
		return r.Repo
	}
	return r.Repo + "@" + r.Revision
}

// Rev returns the revision, DefaultRevision when none was given.
func (r Ref) Rev() string {
	if r.Revision == "" {
		return DefaultRevision
	}
	return r.Revision
}

// FolderName is the repository's directory in the cache:
// "models--org--name".
func (r Ref) FolderName() string {
	return "models--" + strings.ReplaceAll(r.Repo, "/", "--")
}

var (
	repoPart  = regexp.MustCompile(`^[A-Za-z0-9_.\-]+$`)
	commitRe  = regexp.MustCompile(`^[0-9a-f]{40}$`)
	revSafeRe = regexp.MustCompile(`^[A-Za-z0-9_.\-/]+$`)
)

// ParseRef parses "org/name", "name", "org/name@revision". It applies the
// Hub's rules for repository ids (letters, digits, "_", "-", "."; no "--"
// or ".."; not starting or ending with "-" or "."; at most 96 characters)
// and refuses revisions that could leave the cache directory.
func ParseRef(s string) (Ref, error) {
	repo, rev, hasRev := strings.Cut(s, "@")
	if hasRev {
		if strings.Contains(rev, "@") {
			return Ref{}, fmt.Errorf("%q: more than one @ in a model reference", s)
		}
		if rev == "" {
			return Ref{}, fmt.Errorf("%q: empty revision after @", s)
		}
		if !revSafeRe.MatchString(rev) || strings.Contains(rev, "..") || strings.HasPrefix(rev, "/") || strings.HasSuffix(rev, "/") || strings.Contains(rev, "//") {
			return Ref{}, fmt.Errorf("%q: invalid revision %q", s, rev)
		}
	}
	if err := validRepo(repo); err != nil {
		return Ref{}, fmt.Errorf("%q is not a Hugging Face model id: %v", s, err)
	}
	return Ref{Repo: repo, Revision: rev}, nil
}

func validRepo(repo string) error {
	if repo == "" {
		return errors.New("empty repository id")
	}
	if len(repo) > 96 {
		return errors.New("longer than 96 characters")
	}
	parts := strings.Split(repo, "/")
	if len(parts) > 2 {
		return errors.New("more than one /")
	}
	for _, p := range parts {
		switch {
		case !repoPart.MatchString(p):
			return fmt.Errorf("%q: only letters, digits, _, - and . are allowed", p)
		case strings.HasPrefix(p, "-") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, "-") || strings.HasSuffix(p, "."):
			return fmt.Errorf("%q starts or ends with - or .", p)
		case strings.Contains(p, "--") || strings.Contains(p, ".."):
			return fmt.Errorf("%q contains -- or ..", p)
		}
	}
	return nil
}

// IsRepoID reports whether s could only be a Hub model id and not a local
// path: it parses with ParseRef and does not start with "/", "~" or ".",
// as mergekit decides.
func IsRepoID(s string) bool {
	if s == "" || strings.ContainsAny(s[:1], "/~.") || strings.Contains(s, `\`) {
		return false
	}
	_, err := ParseRef(s)
	return err == nil
}

// Cache is a Hugging Face hub cache directory.
type Cache struct {
	// Dir is the cache directory (the one holding models--org--name).
	Dir string
	// From says how Dir was chosen, for messages: "HF_HUB_CACHE",
	// "HF_HOME", "the default" ...
	From string
}

// DefaultCache returns the cache huggingface_hub uses in this environment.
func DefaultCache() Cache {
	home, _ := os.UserHomeDir()
	return CacheFromEnv(os.Getenv, home)
}

// CacheFromEnv returns the cache directory huggingface_hub would use with
// these environment variables and home directory: $HF_HUB_CACHE, else
// $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else HOME/.cache/huggingface/hub ("~"
// and $VARS in the values are expanded).
func CacheFromEnv(getenv func(string) string, home string) Cache {
	expand := func(p string) string {
		p = os.Expand(p, getenv)
		if p == "~" {
			return home
		}
		if strings.HasPrefix(p, "~/") {
			return filepath.Join(home, p[2:])
		}
		return p
	}
	for _, v := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"} {
		if d := getenv(v); d != "" {
			return Cache{Dir: expand(d), From: "$" + v}
		}
	}
	if d := getenv("HF_HOME"); d != "" {
		return Cache{Dir: filepath.Join(expand(d), "hub"), From: "$HF_HOME/hub"}
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return Cache{Dir: filepath.Join(expand(d), "huggingface", "hub"), From: "$XDG_CACHE_HOME/huggingface/hub"}
	}
	return Cache{Dir: filepath.Join(home, ".cache", "huggingface", "hub"), From: "the default ~/.cache/huggingface/hub"}
}

// Snapshot is a cached revision of a model.
type Snapshot struct {
	Ref Ref
	// Dir is models--org--name/snapshots/COMMIT: the model directory.
	Dir string
	// Commit is the commit hash the revision resolved to.
	Commit string
}

// NotCachedError says that a model (or one of its revisions) is not in the
// cache, where wtool looked, and what is cached instead.
type NotCachedError struct {
	Ref   Ref
	Cache Cache
	// Looked lists the paths that were tried, in order.
	Looked []string
	// Reason is what was missing.
	Reason string
	// Cached lists what the cache holds for this repository (refs and
	// snapshots), when anything.
	Cached []string
}

func (e *NotCachedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is not a local path, and %s is not in the Hugging Face cache %s (%s): %s",
		e.Ref.Repo, e.Ref.String(), e.Cache.Dir, e.Cache.From, e.Reason)
	if len(e.Looked) > 0 {
		fmt.Fprintf(&b, "; looked at %s", strings.Join(e.Looked, ", "))
	}
	if len(e.Cached) > 0 {
		fmt.Fprintf(&b, "; cached: %s", strings.Join(e.Cached, ", "))
	}
	fmt.Fprintf(&b, ". wtool never downloads: fetch it first, e.g. `huggingface-cli download %s", e.Ref.Repo)
	if e.Ref.Revision != "" {
		fmt.Fprintf(&b, " --revision %s", e.Ref.Revision)
	}
	b.WriteString("` (or set HF_HUB_CACHE / HF_HOME to the cache that has it)")
	return b.String()
}

// Resolve finds ref's snapshot directory in the cache. A revision that is a
// ref name (refs/NAME holds a commit hash) is mapped to its commit; a
// 40-digit commit hash names its snapshot directly. It also checks that no
// file of the snapshot is a dangling link (an interrupted download).
func (c Cache) Resolve(ref Ref) (*Snapshot, error) {
	repoDir := filepath.Join(c.Dir, ref.FolderName())
	nc := &NotCachedError{Ref: ref, Cache: c}
	if st, err := os.Stat(repoDir); err != nil || !st.IsDir() {
		nc.Looked = []string{repoDir}
		nc.Reason = "no such directory"
		return nil, nc
	}
	rev := ref.Rev()
	commit := rev
	refFile := filepath.Join(repoDir, "refs", filepath.FromSlash(rev))
	if b, err := os.ReadFile(refFile); err == nil {
		commit = strings.TrimSpace(string(b))
		if !commitRe.MatchString(commit) {
			return nil, fmt.Errorf("%s: %q is not a commit hash", refFile, commit)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	snap := filepath.Join(repoDir, "snapshots", commit)
	if st, err := os.Stat(snap); err != nil || !st.IsDir() {
		if commit == rev {
			nc.Looked = []string{refFile, snap}
			nc.Reason = fmt.Sprintf("revision %q is neither a cached ref nor a cached commit", rev)
		} else {
			nc.Looked = []string{snap}
			nc.Reason = fmt.Sprintf("refs/%s points to commit %s, whose snapshot is missing", rev, commit)
		}
		nc.Cached = cachedRevisions(repoDir)
		return nil, nc
	}
	if err := checkLinks(snap); err != nil {
		return nil, err
	}
	return &Snapshot{Ref: ref, Dir: snap, Commit: commit}, nil
}

// cachedRevisions lists "NAME -> COMMIT" for every ref and the snapshots
// that no ref names, sorted.
func cachedRevisions(repoDir string) []string {
	var out []string
	named := map[string]bool{}
	refs := filepath.Join(repoDir, "refs")
	_ = filepath.WalkDir(refs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(refs, p)
		commit := strings.TrimSpace(string(b))
		named[commit] = true
		out = append(out, fmt.Sprintf("%s -> %s", filepath.ToSlash(rel), commit))
		return nil
	})
	if ents, err := os.ReadDir(filepath.Join(repoDir, "snapshots")); err == nil {
		for _, e := range ents {
			if e.IsDir() && !named[e.Name()] {
				out = append(out, "snapshot "+e.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

// checkLinks fails when a file of the snapshot is a link to a missing blob.
func checkLinks(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("%s: the cached file is a link to a missing blob (an interrupted download?): %w", p, err)
			}
		}
		return nil
	})
}

// ResolveModel returns the directory or file a model argument names: the
// argument itself when it exists locally, else its snapshot in the default
// cache when it is a Hub id ("org/name[@revision]"). A path that exists
// nowhere gives the os error, with a word that Hub ids are looked up in the
// cache only when the argument could be one.
func ResolveModel(arg string) (string, error) {
	return DefaultCache().ResolveModel(arg)
}

// ResolveModel is ResolveModel with this cache.
func (c Cache) ResolveModel(arg string) (string, error) {
	if _, err := os.Stat(arg); err == nil {
		return arg, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if !IsRepoID(arg) {
		_, err := os.Stat(arg)
		return "", fmt.Errorf("%w (not a local path, and not a Hugging Face model id org/name[@revision] either)", err)
	}
	ref, err := ParseRef(arg)
	if err != nil {
		return "", err
	}
	s, err := c.Resolve(ref)
	if err != nil {
		return "", err
	}
	return s.Dir, nil
}
