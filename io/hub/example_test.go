package hub_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/wtool/wtool/io/hub"
)

func ExampleCache_Resolve() {
	// A cache as huggingface_hub lays it out (normally hub.DefaultCache()).
	dir, _ := os.MkdirTemp("", "hub")
	defer os.RemoveAll(dir)
	commit := "0123456789abcdef0123456789abcdef01234567"
	repo := filepath.Join(dir, "models--org--model")
	os.MkdirAll(filepath.Join(repo, "refs"), 0o755)
	os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(commit), 0o644)
	os.MkdirAll(filepath.Join(repo, "snapshots", commit), 0o755)

	cache := hub.Cache{Dir: dir, From: "example"}
	ref, _ := hub.ParseRef("org/model@main")
	snap, err := cache.Resolve(ref)
	if err != nil {
		fmt.Println(err)
		return
	}
	rel, _ := filepath.Rel(dir, snap.Dir)
	fmt.Println(filepath.ToSlash(rel))

	_, err = cache.Resolve(hub.Ref{Repo: "org/other"})
	fmt.Println(err != nil)
	// Output:
	// models--org--model/snapshots/0123456789abcdef0123456789abcdef01234567
	// true
}
