// Copyright ©2025 The wtool Authors.

//go:build !amd64 || purego

package linalg

// bestLevel returns the fastest kernel level supported by this CPU. Without
// assembly kernels that is gonum's pure-Go implementation.
func bestLevel() level { return levelGonum }

// levelSupported reports whether kernels of level l can run on this platform.
func levelSupported(l level) bool { return l == levelGonum || l == levelGo }

// archConfigs returns nil: there are no assembly kernels on this platform.
func archConfigs(level) (*config[float32], *config[float64]) { return nil, nil }
