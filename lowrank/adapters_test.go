package lowrank

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/wtool/wtool/io/checkpoint"
	"github.com/wtool/wtool/io/peft"
	"github.com/wtool/wtool/tensors"
)

func TestPiSSACheckpoint(t *testing.T) {
	dir := t.TempDir()
	// a bf16 copy of the demo model, to see the residual's rounding reported
	bf := filepath.Join(dir, "bf16")
	src := open(t, demo+"/mlp-a")
	if _, err := checkpoint.Convert(context.Background(), src, bf, tensors.BF16, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	m := open(t, bf)
	out := filepath.Join(dir, "pissa")
	reports, _, err := InitAdapters(context.Background(), m, out, AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 8}, Alpha: 16, SVD: SVDOptions{Exact: true}}, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 4 { // fc5 is the MLP's output head: not a default target
		t.Fatalf("%d modules adapted", len(reports))
	}
	res := open(t, out)
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Error("config.json not copied to the residual model")
	}
	ad, err := peft.Read(filepath.Join(out, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(out, "adapter", peft.ConfigFile))
	var cfg map[string]any
	json.Unmarshal(raw, &cfg)
	if cfg["peft_type"] != "LORA" || cfg["init_lora_weights"] != true || cfg["r"] != 8.0 || cfg["lora_alpha"] != 16.0 ||
		strings.Join(ad.Config.TargetModules, ",") != "fc1,fc2,fc3,fc4" || cfg["bias"] != "none" || cfg["use_rslora"] != false {
		t.Errorf("adapter_config.json: %s", raw)
	}
	for _, r := range reports {
		mod := ad.Modules[r.Module]
		if mod == nil || mod.A.DType != tensors.F32 || mod.A.Shape[0] != 8 || mod.B.Shape[1] != 8 {
			t.Fatalf("module %s: %+v", r.Module, mod)
		}
		a, _ := mod.A.Float32()
		b, _ := mod.B.Float32()
		resid := floats(t, res, r.Module+".weight")
		orig := floats(t, m, r.Module+".weight")
		o, n := int(r.Shape[0]), int(r.Shape[1])
		lr := matmul(b, a, o, 8, n)
		s := ad.Config.Scaling(r.Module)
		var worst float64
		for i := range orig {
			worst = math.Max(worst, math.Abs(float64(resid[i])+s*lr[i]-float64(orig[i])))
		}
		// the residual is stored in bf16: W is reproduced to bf16 rounding
		if worst > 0.01 {
			t.Errorf("%s: residual + scaling B A differs from W by %g", r.Module, worst)
		}
		if r.CastError <= 0 || r.CastError > 0.01 {
			t.Errorf("%s: cast error %g", r.Module, r.CastError)
		}
		if info, _ := res.Info(r.Module + ".weight"); info.DType != tensors.BF16 {
			t.Errorf("residual dtype %s", info.DType)
		}
	}
}

func TestPiSSAEnergyPatternsAndConvert(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	out := filepath.Join(dir, "pissa")
	reports, _, err := InitAdapters(context.Background(), m, out, AdapterOptions{Method: "pissa", Rule: RankRule{Energy: 0.8},
		Targets: []*regexp.Regexp{regexp.MustCompile(`fc[1-4]\.weight`)}}, checkpoint.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	init, err := peft.Read(filepath.Join(out, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reports {
		if r.Energy < 0.8 {
			t.Errorf("%s keeps %.3f", r.Module, r.Energy)
		}
		rank := init.Config.R
		if v, ok := init.Config.RankPattern[r.Module]; ok {
			rank = v
		}
		if rank != r.Rank || init.Modules[r.Module].Rank() != r.Rank {
			t.Errorf("%s: rank %d in the report, %d in the config", r.Module, r.Rank, rank)
		}
		if init.Config.Scaling(r.Module) != 1 { // alpha defaults to r
			t.Errorf("%s: scaling %g", r.Module, init.Config.Scaling(r.Module))
		}
	}
	// "train" the adapter: perturb its factors
	trained := &peft.Adapter{Config: init.Config, Modules: map[string]*peft.Module{}}
	for name, mod := range init.Modules {
		a, _ := mod.A.Float32()
		b, _ := mod.B.Float32()
		for i := range a {
			a[i] += 0.01 * float32(math.Sin(float64(i)))
		}
		for i := range b {
			b[i] -= 0.02 * float32(math.Cos(float64(i)))
		}
		at, _ := tensors.FromFloat32(mod.A.Name, tensors.F32, mod.A.Shape, a)
		bt, _ := tensors.FromFloat32(mod.B.Name, tensors.F32, mod.B.Shape, b)
		trained.Modules[name] = &peft.Module{Name: name, A: at, B: bt}
	}
	lora, err := peft.ConvertPiSSA(init, trained)
	if err != nil {
		t.Fatal(err)
	}
	if lora.Config.R != 2*init.Config.R || lora.Config.LoraAlpha != 2*init.Config.LoraAlpha {
		t.Errorf("r %d alpha %g", lora.Config.R, lora.Config.LoraAlpha)
	}
	// the converted LoRA applied to the original base equals the residual
	// model plus the trained adapter
	res := open(t, out)
	for _, r := range reports {
		o, n := int(r.Shape[0]), int(r.Shape[1])
		orig := floats(t, m, r.Module+".weight")
		resid := floats(t, res, r.Module+".weight")
		tm, lm := trained.Modules[r.Module], lora.Modules[r.Module]
		ta, _ := tm.A.Float32()
		tb, _ := tm.B.Float32()
		la, _ := lm.A.Float32()
		lb, _ := lm.B.Float32()
		want := matmul(tb, ta, o, tm.Rank(), n)
		got := matmul(lb, la, o, lm.Rank(), n)
		s, s2 := trained.Config.Scaling(r.Module), lora.Config.Scaling(r.Module)
		for i := range orig {
			x := float64(resid[i]) + s*want[i]
			y := float64(orig[i]) + s2*got[i]
			if math.Abs(x-y) > 1e-4 {
				t.Fatalf("%s[%d]: residual + trained adapter %g, base + converted LoRA %g", r.Module, i, x, y)
			}
		}
	}
	// write and read back the converted adapter
	ldir := filepath.Join(dir, "lora")
	if err := peft.Write(context.Background(), ldir, lora, false); err != nil {
		t.Fatal(err)
	}
	back, err := peft.Read(ldir)
	if err != nil || len(back.Modules) != len(lora.Modules) || back.Config.R != lora.Config.R {
		t.Fatalf("%v", err)
	}
}

func TestSORSAAndSVFitCheckpoints(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	for _, method := range []string{"sorsa", "svfit"} {
		out := filepath.Join(dir, method)
		reports, _, err := InitAdapters(context.Background(), m, out, AdapterOptions{Method: method, Rule: RankRule{Rank: 5}}, checkpoint.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := open(t, out)
		names := [3]string{SORSAA, SORSAS, SORSAB}
		if method == "svfit" {
			names = [3]string{SVFitV, SVFitS, SVFitU}
		}
		for _, r := range reports {
			o, n := int(r.Shape[0]), int(r.Shape[1])
			a := floats(t, c, r.Module+names[0])
			s := floats(t, c, r.Module+names[1])
			b := floats(t, c, r.Module+names[2])
			bs := make([]float32, len(b))
			for i := range o {
				for k := range 5 {
					bs[i*5+k] = b[i*5+k] * s[k]
				}
			}
			lr := matmul(bs, a, o, 5, n)
			resid := floats(t, c, r.Module+".weight")
			orig := floats(t, m, r.Module+".weight")
			for i := range orig {
				if math.Abs(float64(resid[i])+lr[i]-float64(orig[i])) > 1e-5 {
					t.Fatalf("%s %s: W not reproduced at %d", method, r.Module, i)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(out, method+"_config.json")); err != nil {
			t.Errorf("%s_config.json missing", method)
		}
	}
}

func TestAdapterRefusals(t *testing.T) {
	dir := t.TempDir()
	m := open(t, demo+"/mlp-a")
	cases := []struct {
		name string
		o    AdapterOptions
		out  string
		want string
	}{
		{"rank too large", AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 65}}, "a", "larger than min"},
		{"target matches nothing", AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 4}, Targets: []*regexp.Regexp{regexp.MustCompile("q_proj")}}, "b", "matches no"},
		{"single file output", AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 4}}, "c.safetensors", "model directory"},
		{"unknown method", AdapterOptions{Method: "dora", Rule: RankRule{Rank: 4}}, "d", "unknown adapter method"},
	}
	for _, tc := range cases {
		out := filepath.Join(dir, tc.out)
		_, _, err := InitAdapters(context.Background(), m, out, tc.o, checkpoint.WriteOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output written", tc.name)
		}
	}
	// a model without 2-D weights
	p := filepath.Join(dir, "vec.safetensors")
	x, _ := tensors.FromFloat32("norm.weight", tensors.F32, []int64{4}, []float32{1, 2, 3, 4})
	f, _ := os.Create(p)
	writeST(f, x)
	f.Close()
	vm := open(t, p)
	if _, _, err := InitAdapters(context.Background(), vm, filepath.Join(dir, "e"), AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 1}}, checkpoint.WriteOptions{}); err == nil || !strings.Contains(err.Error(), "no weight") {
		t.Errorf("model without 2-D weights: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".wtool-spill-*")); len(left) > 0 {
		t.Errorf("spill files left: %v", left)
	}
}

// TestAdapterCreatesParents (issue item 6): an output whose parent
// directories do not exist yet is created, as every other command does.
func TestAdapterCreatesParents(t *testing.T) {
	out := filepath.Join(t.TempDir(), "new", "dir", "pissa")
	m := open(t, demo+"/mlp-a")
	if _, _, err := InitAdapters(context.Background(), m, out, AdapterOptions{Method: "pissa", Rule: RankRule{Rank: 4}}, checkpoint.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "adapter", peft.WeightsFile)); err != nil {
		t.Error(err)
	}
	left, _ := os.ReadDir(filepath.Dir(out))
	if len(left) != 1 {
		t.Errorf("left behind beside the output: %v", left)
	}
}
