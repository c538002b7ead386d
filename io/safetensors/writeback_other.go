//go:build !linux

package safetensors

import "os"

func startWriteback(*os.File, int64, int64) {}
