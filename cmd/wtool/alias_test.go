package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// aliasFixtures builds every kind of input file the commands read.
type aliasFixtures map[string]string

func makeAliasFixtures(t *testing.T, root string) aliasFixtures {
	t.Helper()
	f := aliasFixtures{
		"a": filepath.Join(root, "a"), "b": filepath.Join(root, "b"),
		"calib": filepath.Join(root, "data", "calib.safetensors"),
	}
	copyTree(t, demoDir+"/mlp-a", f["a"])
	copyTree(t, demoDir+"/mlp-b", f["b"])
	copyOne(t, demoDir+"/digits_train.safetensors", f["calib"])
	f["stats"] = filepath.Join(root, "stats", "a.safetensors")
	f["joint"] = filepath.Join(root, "stats", "ab.safetensors")
	f["fisher"] = filepath.Join(root, "fisher", "a.safetensors")
	f["fisherb"] = filepath.Join(root, "fisher", "b.safetensors")
	f["pissa"] = filepath.Join(root, "pissa")
	f["adapter"] = filepath.Join(root, "pissa", "adapter")
	f["config"] = filepath.Join(root, "merge.yaml")
	f["spec"] = filepath.Join(root, "spec.json")
	f["demo"] = filepath.Join(root, "demo")
	for _, args := range [][]string{
		{"stats", f["a"], "--calib", f["calib"], "-o", f["stats"]},
		{"stats", f["a"], f["b"], "--calib", f["calib"], "-o", f["joint"]},
		{"fisher", f["a"], "--calib", f["calib"], "--labels", f["calib"], "-o", f["fisher"]},
		{"fisher", f["b"], "--calib", f["calib"], "--labels", f["calib"], "-o", f["fisherb"]},
		{"adapter", f["a"], "-o", f["pissa"], "--rank", "4"},
	} {
		if code, _, stderr := wtool(t, append(args, "-q")...); code != 0 {
			t.Fatal(stderr)
		}
	}
	os.WriteFile(f["config"], []byte(fmt.Sprintf("models:\n  - model: %s\n    parameters: {weight: 1}\n  - model: %s\n    parameters: {weight: 1}\nmerge_method: linear\n", f["a"], f["b"])), 0o644)
	os.WriteFile(f["spec"], []byte(`{"groups": {"P_fc1": 64, "P_fc2": 64, "P_fc3": 64, "P_fc4": 64}, "tensors": {
  "fc1.weight": ["P_fc1", null], "fc1.bias": ["P_fc1"],
  "fc2.weight": ["P_fc2", "P_fc1"], "fc2.bias": ["P_fc2"],
  "fc3.weight": ["P_fc3", "P_fc2"], "fc3.bias": ["P_fc3"],
  "fc4.weight": ["P_fc4", "P_fc3"], "fc4.bias": ["P_fc4"],
  "fc5.weight": [null, "P_fc4"], "fc5.bias": [null]}}`), 0o644)
	os.MkdirAll(f["demo"], 0o755)
	for _, n := range []string{"mlp-a", "mlp-b", "mlp-c", "mlp-d"} {
		copyTree(t, demoDir+"/"+n, filepath.Join(f["demo"], n))
	}
	for _, n := range []string{"digits_train.safetensors", "digits_test.safetensors"} {
		copyOne(t, demoDir+"/"+n, filepath.Join(f["demo"], n))
	}
	return f
}

// TestOutputsNeverOverwriteInputs points every output of every command at
// every input it reads — the same path, a directory containing it, a path
// inside it, a symbolic link to it, a hard link of it, a bind mount of it
// (as root) — and checks that the command refuses (exit 2, naming both)
// and that no input changed.
func TestOutputsNeverOverwriteInputs(t *testing.T) {
	root := t.TempDir()
	f := makeAliasFixtures(t, filepath.Join(root, "in"))
	aside := filepath.Join(root, "aside")
	os.MkdirAll(aside, 0o755)
	before := treeHash(t, filepath.Join(root, "in"))
	type command struct {
		name    string
		inputs  []string // fixture keys
		outputs []string // output flags
		file    bool     // -o must be a .safetensors file
		args    func(out map[string]string) []string
	}
	o := func(out map[string]string, flag string) string {
		if p, ok := out[flag]; ok {
			return p
		}
		return filepath.Join(aside, "unrelated-"+strings.TrimLeft(flag, "-"))
	}
	commands := []command{
		{"convert", []string{"a"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"convert", f["a"], "-o", o(out, "-o")}
		}},
		{"merge linear", []string{"a", "b"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", f["a"], f["b"], "--method", "linear", "-o", o(out, "-o")}
		}},
		{"merge config", []string{"config", "a"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", "--config", f["config"], "-o", o(out, "-o")}
		}},
		{"merge fisher", []string{"fisher", "fisherb"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", f["a"], f["b"], "--method", "fisher", "--fisher", f["fisher"] + "," + f["fisherb"], "-o", o(out, "-o")}
		}},
		{"merge regmean", []string{"stats"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", f["a"], f["a"], "--method", "regmean", "--stats", f["stats"] + "," + f["stats"], "-o", o(out, "-o")}
		}},
		{"merge pleas", []string{"calib"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", f["a"], f["b"], "--method", "pleas", "--calib", f["calib"], "-o", o(out, "-o")}
		}},
		{"merge wm spec", []string{"spec"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"merge", f["a"], f["b"], "--method", "wm", "--spec", f["spec"], "-o", o(out, "-o")}
		}},
		{"compress fwsvd", []string{"a", "fisher"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"compress", f["a"], "--method", "fwsvd", "--fisher", f["fisher"], "--rank", "4", "-o", o(out, "-o")}
		}},
		{"compress whiten", []string{"stats"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"compress", f["a"], "--method", "whiten", "--stats", f["stats"], "--rank", "4", "-o", o(out, "-o")}
		}},
		{"compress asvd calib", []string{"calib"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"compress", f["a"], "--method", "asvd", "--calib", f["calib"], "--rank", "4", "-o", o(out, "-o")}
		}},
		{"adapter", []string{"a"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"adapter", f["a"], "--rank", "4", "-o", o(out, "-o")}
		}},
		{"adapter convert", []string{"adapter"}, []string{"-o"}, false, func(out map[string]string) []string {
			return []string{"adapter", "convert", f["adapter"], f["adapter"], "-o", o(out, "-o")}
		}},
		{"align", []string{"a", "b", "joint", "spec"}, []string{"-o", "--save-perm"}, false, func(out map[string]string) []string {
			return []string{"align", f["a"], f["b"], "--method", "activation", "--stats", f["joint"], "--spec", f["spec"],
				"-o", o(out, "-o"), "--save-perm", o(out, "--save-perm") + ".safetensors"}
		}},
		{"stats", []string{"a", "calib"}, []string{"-o"}, true, func(out map[string]string) []string {
			return []string{"stats", f["a"], "--calib", f["calib"], "-o", o(out, "-o")}
		}},
		{"fisher", []string{"a", "calib"}, []string{"-o"}, true, func(out map[string]string) []string {
			return []string{"fisher", f["a"], "--calib", f["calib"], "--labels", f["calib"], "-o", o(out, "-o")}
		}},
		{"spectrum", []string{"a"}, []string{"--plot"}, false, func(out map[string]string) []string {
			return []string{"spectrum", f["a"], "--plot", o(out, "--plot")}
		}},
		{"demo", []string{"demo"}, []string{"--plot"}, false, func(out map[string]string) []string {
			return []string{"demo", "--dir", f["demo"], "--plot", o(out, "--plot")}
		}},
	}
	// the variants of an output over an input path p
	n := 0
	variants := func(t *testing.T, p string, needFile bool) map[string]string {
		n++
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]string{}
		inside := filepath.Join(p, "inside.safetensors")
		if !needFile || strings.HasSuffix(p, ".safetensors") {
			v["same path"] = p
		}
		if !needFile {
			v["directory containing it"] = filepath.Dir(p)
		}
		if st.IsDir() {
			v["path inside it"] = inside
		}
		link := filepath.Join(aside, fmt.Sprintf("link%d.safetensors", n))
		os.Symlink(p, link)
		if !needFile || !st.IsDir() {
			v["symbolic link"] = link
		} else {
			v["through a symbolic link"] = filepath.Join(link, "inside.safetensors")
		}
		if !st.IsDir() {
			hard := filepath.Join(aside, fmt.Sprintf("hard%d.safetensors", n))
			if os.Link(p, hard) == nil {
				v["hard link"] = hard
			}
		}
		if os.Geteuid() == 0 {
			dir := p
			if !st.IsDir() {
				dir = filepath.Dir(p)
			}
			mnt := filepath.Join(aside, fmt.Sprintf("bind%d", n))
			os.Mkdir(mnt, 0o755)
			if exec.Command("mount", "--bind", dir, mnt).Run() == nil {
				t.Cleanup(func() { exec.Command("umount", mnt).Run() })
				if st.IsDir() {
					v["bind mount"] = filepath.Join(mnt, "inside.safetensors")
					if !needFile {
						v["bind mount itself"] = mnt
					}
				} else {
					v["file through a bind mount"] = filepath.Join(mnt, filepath.Base(p))
				}
			}
		}
		return v
	}
	runs := 0
	for _, c := range commands {
		for _, in := range c.inputs {
			for _, flag := range c.outputs {
				needFile := c.file && flag == "-o"
				for vname, out := range variants(t, f[in], needFile) {
					name := fmt.Sprintf("%s/%s %s over %s", c.name, flag, vname, in)
					outs := map[string]string{flag: out}
					args := c.args(outs)
					if flag == "--save-perm" { // the flag adds .safetensors
						args[len(args)-1] = out
					}
					code, _, stderr := wtool(t, append(args, "--force", "-q")...)
					runs++
					if code != exitUsage || !strings.Contains(stderr, "refusing to overwrite an input") {
						t.Errorf("%s: exit %d, stderr %q", name, code, stderr)
					}
				}
			}
		}
	}
	if after := treeHash(t, filepath.Join(root, "in")); after != before {
		t.Error("an input changed")
	}
	if left := leftoverTemps(root); len(left) > 0 {
		t.Errorf("temporaries left: %v", left)
	}
	t.Logf("%d refusals checked", runs)
}
