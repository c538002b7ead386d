package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wtool/wtool/fisher/mlp"
	"github.com/wtool/wtool/io/checkpoint"
)

// mlpFlags are the flags of commands that run the built-in MLP engine.
type mlpFlags struct {
	act      string
	layers   string
	calib    string
	calibKey string
}

func (f *mlpFlags) register(cmd *cobra.Command, calibRequired bool) {
	cmd.Flags().StringVar(&f.act, "act", "relu", "activation between the MLP's layers: relu, gelu (exact erf), silu or tanh")
	cmd.Flags().StringVar(&f.layers, "layers", "", "the MLP's Linear modules in forward order, comma-separated (default: found from names and shapes)")
	cmd.Flags().StringVar(&f.calib, "calib", "", "calibration inputs: a safetensors file with a 2-D floating tensor [samples, features]")
	cmd.Flags().StringVar(&f.calibKey, "calib-key", "", "name of the calibration tensor when the file has several")
	if calibRequired {
		cmd.MarkFlagRequired("calib")
	}
}

// load opens a model and builds its MLP network.
func (f *mlpFlags) load(path string) (*mlp.Network, error) {
	act, err := mlp.ParseActivation(f.act)
	if err != nil {
		return nil, usageErrorf("--act: %v", err)
	}
	var order []string
	if f.layers != "" {
		order = strings.Split(f.layers, ",")
	}
	m, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	n, err := mlp.Load(m, order, act)
	if err != nil {
		if !strings.Contains(err.Error(), path) {
			err = fmt.Errorf("%s: %w", path, err)
		}
		return nil, fmt.Errorf("the built-in engine runs plain MLPs: %w; for other architectures tools/wtool_collect.py writes the statistics and Fisher files", err)
	}
	return n, nil
}
