package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/pipeline"
)

func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "version [--ort-lib PATH]", stderr)
	ortLib := fs.String("ort-lib", "", pipeline.ORTLibHelp)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "htcstream   %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(stdout, "opencv      %s (gocv %s)\n", gocv.OpenCVVersion(), gocv.Version())
	libs, err := pipeline.NativeLibraries(*ortLib)
	fmt.Fprintf(stdout, "ffmpeg      %s\n", libs.FFmpeg)
	if err != nil {
		fmt.Fprintln(stdout, "onnxruntime not loaded")
		return err
	}
	fmt.Fprintf(stdout, "onnxruntime %s (%s)\n", libs.ORTVersion, libs.ORTPath)
	fmt.Fprintf(stdout, "providers   %s\n", strings.Join(libs.Providers, ", "))
	return nil
}
