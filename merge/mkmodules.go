package merge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wtool/wtool/io/arch"
	"github.com/wtool/wtool/merge/mkconfig"
)

// mergekitModules are the modules of mergekit's multi-module architecture
// definitions (arcee-ai/mergekit, mergekit/_data/architectures, kind
// "modular"), by the architectures entry of config.json, in their
// definitions' order. Every other architecture mergekit knows, and every
// family wtool knows, has one module, named "default"
// (mkconfig.DefaultModule).
var mergekitModules = map[string][]string{
	"Gemma3ForConditionalGeneration":     {"text_decoder", "multi_modal_projector", "vision_tower"},
	"Llama4ForConditionalGeneration":     {"text_decoder", "multi_modal_projector", "vision_model"},
	"Mistral3ForConditionalGeneration":   {"text_decoder", "multi_modal_projector", "vision_tower"},
	"Qwen2VLForConditionalGeneration":    {"text_decoder", "multi_modal_projector", "vision_tower"},
	"Qwen2_5_VLForConditionalGeneration": {"text_decoder", "multi_modal_projector", "vision_tower"},
	"Qwen3VLForConditionalGeneration":    {"text_decoder", "multi_modal_projector", "vision_tower"},
	"Qwen3VLMoeForConditionalGeneration": {"text_decoder", "multi_modal_projector", "vision_tower"},
	"T5ForConditionalGeneration":         {"decoder", "encoder", "shared"},
	"WhisperForConditionalGeneration":    {"decoder", "encoder"},
}

// configArchitecture reads the architecture mergekit takes a configuration's
// modules from: the architectures entry of config.json of the base model,
// else of the first model. resolve maps a reference to its directory.
func configArchitecture(c *mkconfig.Config, resolve func(mkconfig.ModelRef) (string, error)) (string, error) {
	refs := c.ReferencedModels()
	if len(refs) == 0 {
		return "", fmt.Errorf("the configuration names no model")
	}
	dir, err := resolve(refs[0])
	if err != nil {
		return "", err
	}
	file := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	cfg, err := arch.ParseConfig(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if cfg.Architecture() == "" {
		return "", fmt.Errorf("%s has no architectures entry", file)
	}
	return cfg.Architecture(), nil
}

// singleModule returns the configuration that a modules: section with the
// single module "default" means: the module's models: or slices: at the top
// level (mergekit turns top-level models: and slices: into that module), and
// the module's parameters (between the slices' and the global ones, see
// moduleParams). Any other module (the text_decoder, vision_tower, ... of
// mergekit's multi-module architectures), several modules, or "default" on
// an architecture mergekit splits into modules, is refused naming the
// module, the architecture (read with archOf, which may fail: the error then
// says why) and what wtool supports.
func singleModule(c *mkconfig.Config, archOf func() (string, error)) (*mkconfig.Config, mkconfig.OutputModule, error) {
	supported := fmt.Sprintf("wtool supports models:, slices:, or modules: with the one module %q of single-module architectures (wtool's families: %s); models: merges every module of an architecture alike",
		mkconfig.DefaultModule, strings.Join(arch.Families(), ", "))
	archName, archErr := archOf()
	archMods, multi := mergekitModules[archName]
	for _, mod := range c.Modules {
		if mod.Name == mkconfig.DefaultModule {
			continue
		}
		switch {
		case archErr != nil:
			return nil, mkconfig.OutputModule{}, cfgErr(mod.Line, "modules: module %q is not supported (the architecture could not be read: %v); %s",
				mod.Name, archErr, supported)
		case multi:
			return nil, mkconfig.OutputModule{}, cfgErr(mod.Line, "modules: per-module merges are not supported: %q is a module of %s (mergekit's modules: %s); %s",
				mod.Name, archName, strings.Join(archMods, ", "), supported)
		}
		return nil, mkconfig.OutputModule{}, cfgErr(mod.Line, "modules: %s has no module %q (its one module is %q); %s",
			archName, mod.Name, mkconfig.DefaultModule, supported)
	}
	mod := c.Modules[0]
	if len(c.Modules) > 1 { // mkconfig refuses duplicated keys; kept for safety
		return nil, mkconfig.OutputModule{}, cfgErr(c.Modules[1].Line, "modules: module %q is given twice", mod.Name)
	}
	if multi {
		return nil, mkconfig.OutputModule{}, cfgErr(mod.Line, "modules: %s has no module %q (mergekit's modules: %s) and per-module merges are not supported; %s",
			archName, mod.Name, strings.Join(archMods, ", "), supported)
	}
	cc := *c
	cc.Modules, cc.Models, cc.Slices = nil, mod.Models, mod.Slices
	cc.Lines = make(map[string]int, len(c.Lines)+1)
	for k, v := range c.Lines {
		cc.Lines[k] = v
	}
	if len(mod.Models) > 0 {
		cc.Lines["models"] = mod.Line
	} else {
		cc.Lines["slices"] = mod.Line
	}
	return &cc, mod, nil
}

// moduleParams lays a module's decoded parameters over the global ones, as
// mergekit looks them up (a module's, then the global ones): a Number whose
// conditions match no tensor falls back to the global value (see
// Setting.Or); any other module value replaces the global one.
func moduleParams(global, module Params, schema map[string]Param) {
	for name, v := range module {
		if g, ok := global[name]; ok && schema[name].Kind == Number {
			v = Value{Num: v.Num.Or(g.Num)}
		}
		global[name] = v
	}
}
