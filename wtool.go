// Package wtool is the root of the wtool module (see README.md and the
// packages under it). It embeds the demo's models and data, whose source is
// testdata/demo, so that an installed binary can run `wtool demo` outside a
// checkout; merge/demo extracts them.
package wtool

import "embed"

// Demo holds testdata/demo's models (mlp-a ... mlp-d: model.safetensors and
// config.json) and data (digits_train.safetensors, digits_test.safetensors),
// under the path testdata/demo, and the trained ResNet pair of
// testdata/pairs (resnet-a, resnet-b) for the demo's PLeaS table.
//
//go:embed testdata/demo/*.safetensors testdata/demo/mlp-*/model.safetensors testdata/demo/mlp-*/config.json
//go:embed testdata/pairs/resnet-a/* testdata/pairs/resnet-b/*
var Demo embed.FS
