package mkconfig_test

import (
	"fmt"

	"github.com/wtool/wtool/merge/mkconfig"
)

func ExampleParse() {
	c, err := mkconfig.Parse([]byte(`
models:
  - model: org/fine-tune-a
    parameters: {weight: [1, 0.5], density: 0.5}
  - model: org/fine-tune-b
    parameters: {weight: 0.5, density: 0.7}
merge_method: ties
base_model: org/base
dtype: bfloat16
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.MergeMethod, c.BaseModel, c.DType, len(c.Models))
	fmt.Println(c.Features())
	// Output:
	// ties org/base bfloat16 2
	// [base_model dtype gradient method:ties model parameters models]
}

func ExampleConfig_Validate() {
	c, _ := mkconfig.Parse([]byte(`models:
  - model: a
    parameters: {weight: 1, epsilon: 0.1}
  - model: b
merge_method: ties
base_model: base
`))
	fmt.Println(c.Validate(mkconfig.ValidateOptions{}))
	// Output:
	// line 3: models[0].parameters: "epsilon" is not a parameter of ties (its parameters: per model: weight, density; global: normalize, rescale, lambda, int8_mask)
	// line 4: model b has no weight (required by ties; mergekit does not default it)
}

// The parameters of one tensor of one layer, as mergekit evaluates them.
func ExampleScope_Resolve() {
	c, _ := mkconfig.Parse([]byte(`slices:
  - sources:
      - {model: base, layer_range: [0, 5]}
      - {model: ft, layer_range: [0, 5], parameters: {weight: [0, 1]}}
merge_method: task_arithmetic
base_model: base
parameters: {lambda: [{filter: mlp, value: 0.5}, {value: 1}]}
`))
	mods, _ := c.Normalize(nil)
	layer := mods[0].Layers()[1] // t = 1/4
	global, perModel, _ := c.LayerScope(&mods[0], layer, "model.layers.1.mlp.up_proj.weight").
		Resolve(mkconfig.Methods["task_arithmetic"], []mkconfig.ModelRef{layer.Sources[1].Model})
	fmt.Println(layer.T, global["lambda"].Num, perModel[0]["weight"].Num, perModel[0]["density"].Num)
	// Output:
	// 0.25 0.5 0.25 1
}

func ExampleParseMulti() {
	m, _ := mkconfig.ParseMulti([]byte(`name: stage-one
merge_method: linear
models: [{model: a}, {model: b}]
parameters: {weight: 0.5}
---
merge_method: slerp
base_model: stage-one
models: [{model: c}]
parameters: {t: 0.3}
`), mkconfig.WtoolKeys)
	order, _ := m.Order()
	for _, s := range order {
		fmt.Printf("%q needs %q\n", s.Name, m.Deps[s.Name])
	}
	m.Resolve(func(stage string) string { return "intermediate/" + stage })
	fmt.Println(m.Stage("").BaseModel)
	// Output:
	// "stage-one" needs []
	// "" needs ["stage-one"]
	// intermediate/stage-one
}
