package mkconfig

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
)

// pyyamlScript reads a JSON list of YAML texts and prints, for each, the
// JSON of what PyYAML's safe_load (mergekit's loader) makes of it, with
// every scalar tagged by its Python type.
const pyyamlScript = `
import json, sys, yaml
SCALARS = sys.argv[1] == "scalars"  # else: numbers compare by value (pydantic makes every parameter a float)
def tag(x):
    if isinstance(x, dict): return {str(k): tag(v) for k, v in x.items()}
    if isinstance(x, list): return [tag(v) for v in x]
    if isinstance(x, bool): return ["bool", x]
    if isinstance(x, int): return ["int", x] if SCALARS else ["num", float(x)]
    if isinstance(x, float): return ["float", repr(x)] if SCALARS else ["num", x]
    if x is None: return ["none", None]
    return [type(x).__name__, str(x)]
out = []
for doc in json.load(sys.stdin):
    try:
        d = yaml.safe_load(doc)
        if isinstance(d, dict) and isinstance(d.get("tokenizer"), dict) and d["tokenizer"].get("source") == "union":
            del d["tokenizer"]["source"]  # the default, left out of the canonical form
        out.append(tag(d))
    except Exception as e:
        out.append({"error": str(e)})
print(json.dumps(out, sort_keys=True))
`

func pyyaml(t *testing.T, mode string, docs []string) []json.RawMessage {
	t.Helper()
	py := testenv.PythonWith(t, "yaml")
	in, _ := json.Marshal(docs)
	cmd := exec.Command(py, "-c", pyyamlScript, mode)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var res []json.RawMessage
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// Plain scalars resolve as PyYAML resolves them.
func TestScalarsMatchPyYAML(t *testing.T) {
	ins := []string{"yes", "No", "on", "OFF", "true", "y", "n", "010", "0o10", "0x1F", "0b11", "1_000", "1:30", "-1:30:00",
		"1e-3", "1.0e-3", "1.e+3", ".5", "5.", "-.inf", ".NaN", "~", "null", "Null", "0", "-0", "+12", "1.5", "1_0.5",
		"0.5.1", "12e3", "org/model", "2.5e", "00", "09", "1__0", "._5", "+.inf", "1:70", "0x_1", "0b", "<<x"}
	var docs []string
	for _, s := range ins {
		docs = append(docs, "x: "+s+"\n")
	}
	res := pyyaml(t, "scalars", docs)
	for i, s := range ins {
		var py map[string][2]any
		if err := json.Unmarshal(res[i], &py); err != nil {
			t.Errorf("%s: %s", s, res[i])
			continue
		}
		pk := py["x"][0].(string)
		c, err := Parse([]byte("merge_method: m\nmodels: [{model: a}]\nparameters: {x: " + s + "}\n"))
		if err != nil {
			if pk != "none" {
				t.Errorf("%s: PyYAML reads a %s, we fail: %v", s, pk, err)
			}
			continue
		}
		st, _ := c.Parameters.Get("x")
		v := *st.Scalar
		var ok bool
		switch pk {
		case "bool":
			ok = v.Kind == Bool && v.Bool == py["x"][1].(bool)
		case "int":
			ok = v.Kind == Number && v.Int && v.Num == py["x"][1].(float64)
		case "float":
			f, _ := parseLaxFloat(py["x"][1].(string))
			ok = v.Kind == Number && !v.Int && (v.Num == f || (v.Num != v.Num && f != f))
		case "str":
			// a string PyYAML reads; pydantic turns numeric strings into numbers
			if f, isNum := parseLaxFloat(py["x"][1].(string)); isNum {
				ok = v.Kind == Number && (v.Num == f || f != f)
			} else {
				ok = v.Kind == String && v.Str == py["x"][1].(string)
			}
		}
		if !ok {
			t.Errorf("%s: PyYAML %v, we %+v", s, py["x"], v)
		}
	}
}

// PyYAML reads the canonical YAML as it reads the original file.
func TestCanonicalYAMLMatchesPyYAML(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/mergekit/configs/*.yml")
	var docs, names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := ParseMulti(b, WtoolKeys)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range m.Stages {
			orig := strings.Split(string(b), "\n---\n")[i]
			docs = append(docs, orig, string(c.YAML()))
			names = append(names, filepath.Base(f)+"#"+c.Name)
		}
	}
	res := pyyaml(t, "values", docs)
	for i, n := range names {
		if string(res[2*i]) != string(res[2*i+1]) {
			t.Errorf("%s: PyYAML reads\n%s\nfrom the file and\n%s\nfrom\n%s", n, res[2*i], res[2*i+1], docs[2*i+1])
		}
	}
}
