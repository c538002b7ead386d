package hub

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	commitMain = "0123456789abcdef0123456789abcdef01234567"
	commitTag  = "89abcdef0123456789abcdef0123456789abcdef"
	commitPR   = "fedcba9876543210fedcba9876543210fedcba98"
	commitOld  = "1111111111111111111111111111111111111111"
)

// fakeCache builds the layout huggingface_hub writes: blobs, snapshots whose
// files are relative links to the blobs, and refs files holding commits.
func fakeCache(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	repo := filepath.Join(dir, "models--org--model")
	write := func(rel, data string) {
		p := filepath.Join(repo, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(commit, name, blob string) {
		p := filepath.Join(repo, "snapshots", commit, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), p); err != nil {
			t.Fatal(err)
		}
	}
	write("blobs/aaa", `{"model_type": "llama"}`)
	write("blobs/bbb", "weights")
	write("refs/main", commitMain) // huggingface_hub writes no newline
	write("refs/v1.0", commitTag+"\n")
	write("refs/refs/pr/1", commitPR)
	for _, c := range []string{commitMain, commitTag, commitPR, commitOld} {
		link(c, "config.json", "aaa")
		link(c, "model.safetensors", "bbb")
	}
	// a repository without an org, and one with an interrupted download
	write("../models--gpt2/refs/main", commitMain)
	if err := os.MkdirAll(filepath.Join(dir, "models--gpt2", "snapshots", commitMain), 0o755); err != nil {
		t.Fatal(err)
	}
	write("../models--org--broken/refs/main", commitMain)
	if err := os.MkdirAll(filepath.Join(dir, "models--org--broken", "snapshots", commitMain), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../blobs/missing", filepath.Join(dir, "models--org--broken", "snapshots", commitMain, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolve(t *testing.T) {
	dir := fakeCache(t)
	c := Cache{Dir: dir, From: "test"}
	for _, tc := range []struct {
		ref, commit string
	}{
		{"org/model", commitMain},
		{"org/model@main", commitMain},
		{"org/model@v1.0", commitTag},
		{"org/model@refs/pr/1", commitPR},
		{"org/model@" + commitOld, commitOld}, // a commit no ref names
		{"org/model@" + commitTag, commitTag},
		{"gpt2", commitMain},
	} {
		r, err := ParseRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Resolve(r)
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		want := filepath.Join(dir, r.FolderName(), "snapshots", tc.commit)
		if s.Dir != want || s.Commit != tc.commit {
			t.Errorf("%s: got %s (%s), want %s", tc.ref, s.Dir, s.Commit, want)
		}
		if tc.ref != "gpt2" {
			b, err := os.ReadFile(filepath.Join(s.Dir, "config.json"))
			if err != nil || !strings.Contains(string(b), "llama") {
				t.Errorf("%s: config.json through the link: %q %v", tc.ref, b, err)
			}
		}
	}
}

func TestNotCached(t *testing.T) {
	dir := fakeCache(t)
	c := Cache{Dir: dir, From: "$HF_HUB_CACHE"}
	for _, tc := range []struct {
		ref  string
		want []string
	}{
		{"mistralai/Mistral-7B-v0.1", []string{
			"mistralai/Mistral-7B-v0.1 is not a local path",
			filepath.Join(dir, "models--mistralai--Mistral-7B-v0.1"), "$HF_HUB_CACHE", "never downloads",
			"huggingface-cli download mistralai/Mistral-7B-v0.1"}},
		{"org/model@v2.0", []string{`revision "v2.0" is neither a cached ref nor a cached commit`,
			filepath.Join(dir, "models--org--model", "refs", "v2.0"),
			"main -> " + commitMain, "v1.0 -> " + commitTag, "refs/pr/1 -> " + commitPR, "snapshot " + commitOld,
			"--revision v2.0"}},
	} {
		r, err := ParseRef(tc.ref)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Resolve(r)
		var nc *NotCachedError
		if !errors.As(err, &nc) {
			t.Fatalf("%s: got %v, want a NotCachedError", tc.ref, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: message %q lacks %q", tc.ref, err, w)
			}
		}
	}
	// a ref pointing to a missing snapshot
	if err := os.WriteFile(filepath.Join(dir, "models--org--model", "refs", "main"), []byte(strings.Repeat("e", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := c.Resolve(Ref{Repo: "org/model"})
	if err == nil || !strings.Contains(err.Error(), "refs/main points to commit eeee") {
		t.Errorf("got %v", err)
	}
	// an interrupted download
	_, err = c.Resolve(Ref{Repo: "org/broken"})
	if err == nil || !strings.Contains(err.Error(), "link to a missing blob") || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("got %v", err)
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in       string
		repo     string
		rev      string
		wantErr  bool
		isRepoID bool
	}{
		{in: "org/name", repo: "org/name", isRepoID: true},
		{in: "org/name@v1", repo: "org/name", rev: "v1", isRepoID: true},
		{in: "gpt2", repo: "gpt2", isRepoID: true},
		{in: "Org_1/na.me-2", repo: "Org_1/na.me-2", isRepoID: true},
		{in: "org/name@refs/pr/3", repo: "org/name", rev: "refs/pr/3", isRepoID: true},
		{in: "a/b/c", wantErr: true},
		{in: "org/na--me", wantErr: true},
		{in: "org/na..me", wantErr: true},
		{in: "org/-name", wantErr: true},
		{in: "org/name.", wantErr: true},
		{in: "org/name@", wantErr: true},
		{in: "org/name@a@b", wantErr: true},
		{in: "org/name@../../etc", wantErr: true},
		{in: "org/name@/abs", wantErr: true},
		{in: "org/na me", wantErr: true},
		{in: "/abs/path", wantErr: true},
		{in: strings.Repeat("a", 97), wantErr: true},
	} {
		r, err := ParseRef(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && (r.Repo != tc.repo || r.Revision != tc.rev || r.String() != tc.in) {
			t.Errorf("%q: got %+v", tc.in, r)
		}
		if IsRepoID(tc.in) != tc.isRepoID {
			t.Errorf("%q: IsRepoID %v", tc.in, !tc.isRepoID)
		}
	}
	for _, local := range []string{"./org/name", "../name", "~/models/x", "/abs/x", ".hidden/x"} {
		if IsRepoID(local) {
			t.Errorf("%q taken for a Hub id", local)
		}
	}
}

func TestCacheFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "/home/u/.cache/huggingface/hub"},
		{map[string]string{"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"},
		{map[string]string{"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"}, "/hf/hub"},
		{map[string]string{"HF_HOME": "~/hf"}, "/home/u/hf/hub"},
		{map[string]string{"HF_HOME": "$DATA/hf", "DATA": "/data"}, "/data/hf/hub"},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"}, "/legacy"},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "/new"}, "/new"},
	} {
		c := CacheFromEnv(func(k string) string { return tc.env[k] }, "/home/u")
		if c.Dir != tc.want {
			t.Errorf("%v: got %s, want %s", tc.env, c.Dir, tc.want)
		}
	}
}

func TestResolveModel(t *testing.T) {
	dir := fakeCache(t)
	c := Cache{Dir: dir, From: "test"}
	local := t.TempDir()
	got, err := c.ResolveModel(local)
	if err != nil || got != local {
		t.Errorf("local dir: %s %v", got, err)
	}
	got, err = c.ResolveModel("org/model@v1.0")
	if err != nil || got != filepath.Join(dir, "models--org--model", "snapshots", commitTag) {
		t.Errorf("hub id: %s %v", got, err)
	}
	// a local path wins over a Hub id of the same name
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	if err := os.Chdir(local); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("org/model", 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ResolveModel("org/model"); err != nil || got != "org/model" {
		t.Errorf("local org/model: %s %v", got, err)
	}
	_, err = c.ResolveModel("./no/such/dir")
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "not a Hugging Face model id") {
		t.Errorf("missing local path: %v", err)
	}
	_, err = c.ResolveModel("other/model")
	var nc *NotCachedError
	if !errors.As(err, &nc) {
		t.Errorf("uncached id: %v", err)
	}
}
