package arch

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
)

// resnet is torchvision's ResNet (resnet18 ... resnet152, wide and ResNeXt
// variants): a stem conv1/bn1, stages layer1..layer4 of BasicBlocks
// (conv1/bn1, conv2/bn2) or Bottlenecks (conv1..conv3, bn1..bn3), each block
// adding its input (through downsample.0, a 1x1 convolution, and
// downsample.1, a BatchNorm, when the shape changes) to its output, and the
// classifier fc. torchvision checkpoints have no config.json: the family is
// recognised from the tensor names, the block type from conv3.
//
// Spaces: the stem writes "stem"; a stage whose first block has a
// downsample starts a new residual space "layerS.residual" (otherwise it
// continues the previous one); inside block i of stage S, conv1 writes
// "layerS.i.conv1" and a bottleneck's conv2 "layerS.i.conv2"; the last conv
// of a block and its BatchNorm write the stage's residual space.
type resnet struct{}

func init() { Register(resnet{}) }

func (resnet) Name() string { return "resnet" }

// MatchConfig: torchvision checkpoints come without a config.json, and
// transformers' ResNet (model_type "resnet") uses other names; wtool's own
// small ResNets (testdata/pairs) say model_type "torchvision_resnet".
func (resnet) MatchConfig(c *Config) bool { return c.ModelType == "torchvision_resnet" }

func (resnet) MatchNames(names []string) bool {
	for _, n := range []string{"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.bn1.weight"} {
		if !slices.Contains(names, n) {
			return false
		}
	}
	return true
}

func (resnet) Describe(b *Builder) error {
	a := b.Arch()
	a.Block = "basic"
	if slices.ContainsFunc(b.Names, func(n string) bool { return regexp.MustCompile(`^layer\d+\.\d+\.conv3\.weight$`).MatchString(n) }) {
		a.Block = "bottleneck"
	}
	b.Space("pixels", SpaceInput)
	b.Space("labels", SpaceOutput)
	b.Space("stem", SpaceResidual)
	b.SetStage(0)
	b.Add(Spec{Name: "conv1", Kind: Conv, Role: RoleConv, In: "pixels", Out: "stem"})
	b.Add(Spec{Name: "bn1", Kind: BatchNorm, Role: RoleNorm, Out: "stem"})
	res := "stem"
	block := 0
	var stages []int
	for _, g := range b.Matching(regexp.MustCompile(`^layer(\d+)\.`)) {
		s, _ := strconv.Atoi(g[0])
		stages = append(stages, s)
	}
	slices.Sort(stages)
	convs := []string{"conv1", "conv2"}
	if a.Block == "bottleneck" {
		convs = append(convs, "conv3")
	}
	for _, s := range stages {
		b.SetStage(s)
		var blocks []int
		for _, g := range b.Matching(regexp.MustCompile(fmt.Sprintf(`^layer%d\.(\d+)\.`, s))) {
			i, _ := strconv.Atoi(g[0])
			blocks = append(blocks, i)
		}
		slices.Sort(blocks)
		for _, i := range blocks {
			b.SetLayer(block)
			block++
			p := fmt.Sprintf("layer%d.%d.", s, i)
			in := res
			if b.HasModule(p + "downsample.0") {
				res = fmt.Sprintf("layer%d.residual", s)
				b.Space(res, SpaceResidual)
				b.Add(Spec{Name: p + "downsample.0", Kind: Conv, Role: RoleShortcut, In: in, Out: res})
				b.Add(Spec{Name: p + "downsample.1", Kind: BatchNorm, Role: RoleNorm, Out: res})
			}
			prev := in
			for c, conv := range convs {
				out := res
				if c < len(convs)-1 {
					out = p[:len(p)-1] + "." + conv
					b.Space(out, SpaceHidden)
				}
				b.Add(Spec{Name: p + conv, Kind: Conv, Role: RoleConv, In: prev, Out: out})
				b.Add(Spec{Name: p + "bn" + conv[len(conv)-1:], Kind: BatchNorm, Role: RoleNorm, Out: out})
				prev = out
			}
		}
	}
	b.SetLayer(-1)
	b.SetStage(-1)
	a.Layers = block
	b.Add(Spec{Name: "fc", Kind: Linear, Role: RoleHead, In: res, Out: "labels"})
	return nil
}
