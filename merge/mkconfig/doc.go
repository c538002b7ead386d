// Package mkconfig reads and writes mergekit's YAML merge configurations —
// the whole surface mergekit-yaml and mergekit-multi accept — into plain
// typed values, strictly: an unknown key, a duplicated key or a value of the
// wrong type is an error naming its line, where mergekit (pydantic) would
// ignore the key or fail later.
//
// What it covers:
//   - models: with per-model parameters; slices: with sources, layer_range,
//     per-slice and per-source parameters, a per-slice base_model;
//     modules: with their own models or slices;
//   - merge_method, base_model (a model reference "path[@revision][+lora]"
//     or its mapping form), dtype, out_dtype, parameters, tokenizer_source,
//     the tokenizer: section (source, tokens with source/force,
//     pad_to_multiple_of) and chat_template;
//   - parameter values as mergekit evaluates them: numbers, booleans,
//     gradients (lists interpolated over the layers of a slice) and
//     conditions ({filter, value} lists matched against tensor names), with
//     mergekit's lookup order (Scope.Lookup);
//   - several YAML documents with `name:` (mergekit-multi stages), their
//     dependencies and order (ParseMulti);
//   - the output layer plan of slices (Module.Layers) and the layer count it
//     writes (Module.NumLayers);
//   - mergekit's parameter schema for each method (Methods) and a check of a
//     configuration against it (Config.Validate);
//   - the mergekit_config.yml (Config.YAML) and README.md model card (Card)
//     mergekit writes beside a merged model.
//
// YAML is read as mergekit's PyYAML reads it (YAML 1.1 scalars: yes/no/on/off
// are booleans, 010 is octal, 1:30 is 90); anchors, aliases and merge keys
// work. See docs/mergekit.md for the semantics.
package mkconfig
