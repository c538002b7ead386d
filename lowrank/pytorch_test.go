package lowrank

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/checkpoint"
)

// checkScript loads wtool's outputs with PyTorch alone (no PEFT, no
// safetensors package: the collector's reader) and checks that they compute
// what they should on random inputs.
const checkScript = `
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import wtool_collect as wc
mode, a, b = sys.argv[2], sys.argv[3], sys.argv[4]
torch.manual_seed(0)
x = torch.randn(32, 64)

def mlp(state, layers):
    h = x
    for i, m in enumerate(layers):
        h = layers[m](h)
        if i + 1 < len(layers):
            h = torch.relu(h)
    return h

if mode == "factored":
    # a: factored checkpoint (nn.Sequential per module), b: dense reconstruction
    fac, dense = wc.load_checkpoint(a), wc.load_checkpoint(b)
    comp = json.load(open(a + "/compression.json"))
    layers, ref = {}, {}
    for i in range(1, 6):
        m = "fc%d" % i
        ref[m] = torch.nn.Linear(64 if i < 5 else 64, 64 if i < 5 else 10)
        ref[m].load_state_dict({"weight": dense[m + ".weight"], "bias": dense[m + ".bias"]})
        if m in comp["modules"]:
            r = comp["modules"][m]["rank"]
            seq = torch.nn.Sequential(torch.nn.Linear(64, r, bias=False), torch.nn.Linear(r, ref[m].out_features))
            seq.load_state_dict({k[len(m) + 1:]: v for k, v in fac.items() if k.startswith(m + ".")}, strict=True)
            layers[m] = seq
        else:
            layers[m] = ref[m]
    with torch.no_grad():
        y, z = mlp(fac, layers), mlp(dense, ref)
    err = (y - z).abs().max().item()
    assert err < 1e-4, err
    print("factored ok", err)
else:
    # a: PiSSA output dir (residual model + adapter/), b: the original model
    res, orig = wc.load_checkpoint(a), wc.load_checkpoint(b)
    ad, _ = wc.read_safetensors(a + "/adapter/adapter_model.safetensors")
    cfg = json.load(open(a + "/adapter/adapter_config.json"))
    def layers_of(state, adapter):
        out = {}
        for i in range(1, 6):
            m = "fc%d" % i
            w = state[m + ".weight"].clone()
            if adapter and "base_model.model." + m + ".lora_A.weight" in ad:
                r = cfg["rank_pattern"].get(m, cfg["r"])
                alpha = cfg["alpha_pattern"].get(m, cfg["lora_alpha"])
                A = torch.from_numpy(ad["base_model.model." + m + ".lora_A.weight"])
                B = torch.from_numpy(ad["base_model.model." + m + ".lora_B.weight"])
                w = w + (alpha / r) * (B @ A)
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            lin.load_state_dict({"weight": w, "bias": state[m + ".bias"]})
            out[m] = lin
        return out
    with torch.no_grad():
        y, z = mlp(res, layers_of(res, True)), mlp(orig, layers_of(orig, False))
    err = (y - z).abs().max().item()
    assert err < 1e-4, err
    print("pissa ok", err)
`

func runCheck(t *testing.T, py, mode, a, b string) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "check.py")
	os.WriteFile(script, []byte(checkScript), 0o644)
	tools, _ := filepath.Abs("../tools")
	out, err := exec.Command(py, "-B", script, tools, mode, a, b).CombinedOutput()
	if err != nil {
		t.Fatalf("python check %s: %v\n%s", mode, err, out)
	}
	t.Logf("%s", out)
}

// TestFactoredLoadsIntoPyTorch: the factored checkpoint loads into
// nn.Sequential(Linear(in, r, bias=False), Linear(r, out)) per module and
// computes what the dense reconstruction computes.
func TestFactoredLoadsIntoPyTorch(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	o := CompressOptions{Method: "svd", Rule: RankRule{Rank: 10}, Targets: []*regexp.Regexp{regexp.MustCompile(`fc[1-4]\.weight`)}}
	fac, dense := filepath.Join(dir, "fac"), filepath.Join(dir, "dense")
	if _, _, err := Compress(context.Background(), m, fac, o, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	o.Format = "dense"
	if _, _, err := Compress(context.Background(), m, dense, o, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	runCheck(t, py, "factored", fac, dense)
}

// TestPiSSAAppliesInPyTorch: residual + (alpha/r) B A, applied with PyTorch
// from the PEFT files, gives the original model's outputs.
func TestPiSSAAppliesInPyTorch(t *testing.T) {
	py := testenv.Python(t)
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	out := filepath.Join(dir, "pissa")
	if _, _, err := InitAdapters(context.Background(), m, out, AdapterOptions{Method: "pissa", Rule: RankRule{Energy: 0.7}, Alpha: 12}, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	runCheck(t, py, "pissa", out, demo+"/mlp-a")
}
