package pipeline

import (
	"context"
	"fmt"
	"io"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/examples/models"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/internal/install"
)

// ORTLibHelp is the --ort-lib flag's text: where the ONNX Runtime library is
// looked for when the flag is not given (infer.FindLibrary).
var ORTLibHelp = "ONNX Runtime shared library (default: $" + infer.LibraryEnv + ", then " + infer.ProjectLibrary +
	", then the one 'htcstream setup' installed)"

// Libraries are the native libraries a run loads, as `htcstream version`
// reports them.
type Libraries struct {
	FFmpeg string
	// ORTVersion and ORTPath: the ONNX Runtime library loaded.
	ORTVersion, ORTPath string
	// Providers lists cpu and, for each GPU provider, its name or "no NAME"
	// when the library cannot give it.
	Providers []string
}

// NativeLibraries loads ONNX Runtime (ortLib, or where infer.FindLibrary
// looks) and reports what was loaded; FFmpeg's version is there even when
// ONNX Runtime is not.
func NativeLibraries(ortLib string) (Libraries, error) {
	l := Libraries{FFmpeg: decode.FFmpegVersion()}
	path, err := infer.FindLibrary(ortLib)
	if err == nil {
		err = infer.InitRuntime(path)
	}
	if err != nil {
		return l, err
	}
	l.ORTVersion, l.ORTPath = infer.RuntimeVersion(), path
	l.Providers = []string{string(infer.CPU)}
	for _, p := range []infer.Provider{infer.CUDA, infer.TensorRT} {
		if infer.CheckProvider(p) == nil {
			l.Providers = append(l.Providers, string(p))
		} else {
			l.Providers = append(l.Providers, "no "+string(p))
		}
	}
	return l, nil
}

// SetupRuntime is `htcstream setup`: it puts the ONNX Runtime library into
// the user's data folder (install.LibraryPath) from ortLib, else from a
// checkout's copy, else from the npm registry (sha1-checked), loads it, and
// unpacks the embedded default model. It says what it does on out and
// returns the library's path and version.
func SetupRuntime(ctx context.Context, ortLib, registry string, out io.Writer) (lib, version string, err error) {
	rt := install.Pinned()
	src := ortLib
	if src == "" {
		// a checkout's library (scripts/setup's) is the same release:
		// copying it spares a 90 MB download
		if p, err := infer.FindLibrary(""); err == nil {
			if dst, _ := install.LibraryPath(); p != dst {
				src = p
			}
		}
	}
	switch {
	case src != "":
		fmt.Fprintf(out, "setup: copying the ONNX Runtime library from %s\n", src)
		lib, err = install.InstallLibrary(src)
	default:
		if p, _ := install.LibraryPath(); install.Exists(p) {
			lib = p
			fmt.Fprintf(out, "setup: the ONNX Runtime library is already at %s\n", p)
			break
		}
		fmt.Fprintf(out, "setup: fetching onnxruntime-node %s (about 90 MB) from the npm registry\n", rt.Version)
		lib, err = install.FetchLibrary(ctx, registry, rt)
	}
	if err != nil {
		return "", "", err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return "", "", fmt.Errorf("the installed library %s does not load: %w", lib, err)
	}
	version = infer.RuntimeVersion()
	fmt.Fprintf(out, "setup: onnxruntime %s at %s\n", version, lib)
	dir, err := install.UnpackBundle(models.Default(), models.DefaultName)
	if err != nil {
		return "", "", err
	}
	fmt.Fprintf(out, "setup: default model at %s\n", dir)
	return lib, version, nil
}

// ParseTTA reads --tta's LONGxSHORT[,LONGxSHORT...]; "" is no scales (the
// bundle's own).
func ParseTTA(s string) ([]infer.Scale, error) {
	if s == "" {
		return nil, nil
	}
	return infer.ParseScales(s)
}

// CheckProvider accepts cpu, cuda[:N] and tensorrt[:N].
func CheckProvider(p string) error {
	_, _, err := infer.ParseProvider(p)
	return err
}
