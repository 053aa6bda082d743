package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/htcstream/htcstream/examples/models"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/internal/install"
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
	src := *ortLib
	if src == "" {
		// a checkout's library (scripts/setup's) is the same release:
		// copying it spares a 90 MB download
		if p, err := infer.FindLibrary(""); err == nil {
			if dst, _ := install.LibraryPath(); p != dst {
				src = p
			}
		}
	}
	var (
		lib string
		err error
	)
	switch {
	case src != "":
		fmt.Fprintf(stdout, "setup: copying the ONNX Runtime library from %s\n", src)
		lib, err = install.InstallLibrary(src)
	default:
		if p, _ := install.LibraryPath(); fileExistsAt(p) {
			lib = p
			fmt.Fprintf(stdout, "setup: the ONNX Runtime library is already at %s\n", p)
			break
		}
		fmt.Fprintf(stdout, "setup: fetching onnxruntime-node %s (about 90 MB) from the npm registry\n", rt.Version)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		lib, err = install.FetchLibrary(ctx, *registry, rt)
	}
	if err != nil {
		return err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return fmt.Errorf("the installed library %s does not load: %w", lib, err)
	}
	v := infer.RuntimeVersion()
	fmt.Fprintf(stdout, "setup: onnxruntime %s at %s\n", v, lib)
	if v != rt.Version {
		fmt.Fprintf(stderr, "htcstream setup: warning: onnxruntime %s is not the release htcstream is tested with (%s)\n", v, rt.Version)
	}
	dir, err := install.UnpackBundle(models.Default(), models.DefaultName)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "setup: default model at %s\nsetup: ok; try: htcstream run --serve 127.0.0.1:8080 VIDEO\n", dir)
	return nil
}

func fileExistsAt(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
