package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/htcstream/htcstream/internal/install"
	"github.com/htcstream/htcstream/pipeline"
)

// setupCmd makes an installed binary (go install, or bin/htcstream copied
// anywhere) self-sufficient: it puts the ONNX Runtime library into the
// user's data folder, where every later run finds it, and unpacks the
// embedded default model there.
func setupCmd(args []string, stdout, stderr io.Writer) error {
	rt := install.Pinned()
	fs := newFlags("setup", "setup [--ort-lib FILE | --registry URL]", stderr)
	ortLib := fs.String("ort-lib", "", "install this ONNX Runtime library file (default: the checkout's third_party copy when\n"+
		"run from a project checkout, else onnxruntime-node@"+rt.Version+" fetched from the npm registry and checked by sha1)")
	registry := fs.String("registry", os.Getenv("npm_config_registry"), "npm registry to fetch onnxruntime-node from (default https://registry.npmjs.org; $npm_config_registry)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: setup takes no arguments, got %q", errUsage, fs.Arg(0))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, v, err := pipeline.SetupRuntime(ctx, *ortLib, *registry, stdout)
	if err != nil {
		return err
	}
	if v != rt.Version {
		fmt.Fprintf(stderr, "htcstream setup: warning: onnxruntime %s is not the release htcstream is tested with (%s)\n", v, rt.Version)
	}
	fmt.Fprintln(stdout, "setup: ok; try: htcstream run --serve 127.0.0.1:8080 VIDEO")
	return nil
}
