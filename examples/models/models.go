// Package models carries the bundled default model inside the binary, so
// that `go install` or a copied binary has a model to run without the
// project checkout (the manifest and graphs; the parity fixture stays out).
package models

import (
	"embed"
	"io/fs"
)

// DefaultName is the default model's folder name.
const DefaultName = "htc_tiny_synthetic"

//go:embed htc_tiny_synthetic/manifest.yaml htc_tiny_synthetic/*.onnx
var files embed.FS

// Default is the default model's bundle: manifest.yaml and its graphs.
func Default() fs.FS {
	sub, err := fs.Sub(files, DefaultName)
	if err != nil {
		panic(err) // the embed pattern above names this folder
	}
	return sub
}
