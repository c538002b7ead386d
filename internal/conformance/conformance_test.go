package conformance

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/wtool/wtool/internal/testenv"
	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/io/checkpoint"
)

// the families testdata/families/families.py writes
var families = []string{"llama", "qwen2", "mistral", "gemma", "phi3", "gpt2", "mixtral", "bert", "vit", "resnet18", "resnet50"}

var gen = testenv.Generated{Prefix: "wtool-families-"}

func TestMain(m *testing.M) { os.Exit(gen.Run(m)) }

// generated returns the Python interpreter and the directory holding every
// family's checkpoint and the data files (testdata/families/gen.py), written
// once per test binary.
func generated(t *testing.T) (string, string) {
	t.Helper()
	py := python(t)
	return py, gen.Dir(t, func(dir string) error {
		return testenv.RunScript(py, "../../testdata/families/gen.py", dir)
	})
}

var (
	pyOnce sync.Once
	pyPath string
)

// python is testenv.Python, probing the interpreter (a torch import, seconds
// when the disk is busy) once per test binary instead of once per test.
func python(t *testing.T) string {
	t.Helper()
	pyOnce.Do(func() {
		if exec.Command("/usr/bin/python3", "-c", "import torch, numpy").Run() == nil {
			pyPath = "/usr/bin/python3"
		}
	})
	if pyPath == "" {
		return testenv.Python(t) // skips, or fails under WTOOL_REQUIRE_PYTHON, saying why
	}
	return pyPath
}

func open(t *testing.T, p string) *checkpoint.Model {
	t.Helper()
	m, err := checkpoint.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func describe(t *testing.T, m *checkpoint.Model) *arch.Arch {
	t.Helper()
	a, err := arch.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// check runs testdata/families/check.py on the checks.
func check(t *testing.T, py string, checks []map[string]any) {
	t.Helper()
	readme, _ := filepath.Abs("../../README.md")
	b, _ := json.Marshal(map[string]any{"readme": readme, "checks": checks})
	manifest := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(manifest, b, 0o644)
	out, err := exec.Command(py, "-B", "../../testdata/families/check.py", manifest).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("check.py: %v", err)
	}
}

// layer and expert numbers (not nn.Sequential children like downsample.0)
var number = regexp.MustCompile(`(^|\.)(layers?\d*|h|experts)\.\d+`)

func summary(ms []*arch.Module) string {
	count := map[string]int{}
	for _, m := range ms {
		count[number.ReplaceAllString(m.Name, "$1$2.N")]++
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(count)) {
		parts = append(parts, fmt.Sprintf("%s x%d", k, count[k]))
	}
	return strings.Join(parts, ", ")
}

// The golden table of default targets per family: the modules compress,
// spectrum and adapter act on without --target, and the matrices they leave
// out (embeddings, heads, routers), with how many of each.
var goldenTargets = map[string][2]string{
	"llama": {
		"model.layers.N.mlp.down_proj x2, model.layers.N.mlp.gate_proj x2, model.layers.N.mlp.up_proj x2, model.layers.N.self_attn.k_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.q_proj x2, model.layers.N.self_attn.v_proj x2",
		"lm_head x1, model.embed_tokens x1"},
	"qwen2": {
		"model.layers.N.mlp.down_proj x2, model.layers.N.mlp.gate_proj x2, model.layers.N.mlp.up_proj x2, model.layers.N.self_attn.k_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.q_proj x2, model.layers.N.self_attn.v_proj x2",
		"model.embed_tokens x1"},
	"mistral": {
		"model.layers.N.mlp.down_proj x2, model.layers.N.mlp.gate_proj x2, model.layers.N.mlp.up_proj x2, model.layers.N.self_attn.k_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.q_proj x2, model.layers.N.self_attn.v_proj x2",
		"lm_head x1, model.embed_tokens x1"},
	"gemma": {
		"model.layers.N.mlp.down_proj x2, model.layers.N.mlp.gate_proj x2, model.layers.N.mlp.up_proj x2, model.layers.N.self_attn.k_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.q_proj x2, model.layers.N.self_attn.v_proj x2",
		"model.embed_tokens x1"},
	"phi3": {
		"model.layers.N.mlp.down_proj x2, model.layers.N.mlp.gate_up_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.qkv_proj x2",
		"lm_head x1, model.embed_tokens x1"},
	"gpt2": {
		"h.N.attn.c_attn x2, h.N.attn.c_proj x2, h.N.mlp.c_fc x2, h.N.mlp.c_proj x2",
		"wpe x1, wte x1"},
	"mixtral": {
		"model.layers.N.block_sparse_moe.experts.N.w1 x8, model.layers.N.block_sparse_moe.experts.N.w2 x8, model.layers.N.block_sparse_moe.experts.N.w3 x8, model.layers.N.self_attn.k_proj x2, model.layers.N.self_attn.o_proj x2, model.layers.N.self_attn.q_proj x2, model.layers.N.self_attn.v_proj x2",
		"lm_head x1, model.embed_tokens x1, model.layers.N.block_sparse_moe.gate x2"},
	"bert": {
		"bert.encoder.layer.N.attention.output.dense x2, bert.encoder.layer.N.attention.self.key x2, bert.encoder.layer.N.attention.self.query x2, bert.encoder.layer.N.attention.self.value x2, bert.encoder.layer.N.intermediate.dense x2, bert.encoder.layer.N.output.dense x2, bert.pooler.dense x1",
		"bert.embeddings.position_embeddings x1, bert.embeddings.token_type_embeddings x1, bert.embeddings.word_embeddings x1, cls.predictions.transform.dense x1, cls.seq_relationship x1"},
	"vit": {
		"vit.encoder.layer.N.attention.attention.key x2, vit.encoder.layer.N.attention.attention.query x2, vit.encoder.layer.N.attention.attention.value x2, vit.encoder.layer.N.attention.output.dense x2, vit.encoder.layer.N.intermediate.dense x2, vit.encoder.layer.N.output.dense x2",
		"classifier x1, vit.embeddings.patch_embeddings.projection x1"},
	"resnet18": {
		"conv1 x1, layer1.N.conv1 x2, layer1.N.conv2 x2, layer2.N.conv1 x2, layer2.N.conv2 x2, layer2.N.downsample.0 x1, layer3.N.conv1 x2, layer3.N.conv2 x2, layer3.N.downsample.0 x1, layer4.N.conv1 x2, layer4.N.conv2 x2, layer4.N.downsample.0 x1",
		"fc x1"},
	"resnet50": {
		"conv1 x1, layer1.N.conv1 x1, layer1.N.conv2 x1, layer1.N.conv3 x1, layer1.N.downsample.0 x1, layer2.N.conv1 x1, layer2.N.conv2 x1, layer2.N.conv3 x1, layer2.N.downsample.0 x1, layer3.N.conv1 x1, layer3.N.conv2 x1, layer3.N.conv3 x1, layer3.N.downsample.0 x1, layer4.N.conv1 x1, layer4.N.conv2 x1, layer4.N.conv3 x1, layer4.N.downsample.0 x1",
		"fc x1"},
}

func TestDefaultTargetsGolden(t *testing.T) {
	_, dir := generated(t)
	for _, f := range families {
		a := describe(t, open(t, filepath.Join(dir, f)))
		var out []*arch.Module
		for _, m := range a.Modules {
			if m.IsMatrix() && !arch.IsDefaultTarget(m) {
				out = append(out, m)
			}
		}
		got := [2]string{summary(a.DefaultTargets()), summary(out)}
		want, ok := goldenTargets[f]
		if !ok || got != want {
			t.Errorf("%s (family %s):\n  targets  %s\n  excluded %s", f, a.Family, got[0], got[1])
		}
	}
}
