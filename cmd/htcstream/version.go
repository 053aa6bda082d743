package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version [--ort-lib PATH]", stderr)
	ortLib := fs.String("ort-lib", "", "ONNX Runtime shared library (default: $"+infer.LibraryEnv+", then "+infer.ProjectLibrary+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "htcstream   %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(stdout, "opencv      %s (gocv %s)\n", gocv.OpenCVVersion(), gocv.Version())
	fmt.Fprintf(stdout, "ffmpeg      %s\n", decode.FFmpegVersion())
	path, err := infer.FindLibrary(*ortLib)
	if err == nil {
		err = infer.InitRuntime(path)
	}
	if err != nil {
		fmt.Fprintln(stdout, "onnxruntime not loaded")
		return err
	}
	fmt.Fprintf(stdout, "onnxruntime %s (%s)\n", infer.RuntimeVersion(), path)
	providers := []string{string(infer.CPU)}
	for _, p := range []infer.Provider{infer.CUDA, infer.TensorRT} {
		if infer.CheckProvider(p) == nil {
			providers = append(providers, string(p))
		} else {
			providers = append(providers, "no "+string(p))
		}
	}
	fmt.Fprintf(stdout, "providers   %s\n", strings.Join(providers, ", "))
	return nil
}
