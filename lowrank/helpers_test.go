package lowrank

import (
	"io"

	"github.com/wtool/wtool/io/safetensors"
	"github.com/wtool/wtool/tensors"
)

func writeST(w io.Writer, ts ...*tensors.Tensor) error { return safetensors.Encode(w, ts, nil) }
