package infer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/install"
	"github.com/htcstream/htcstream/internal/pyenv"
)

// onnxGraph writes the graph a Python snippet builds with the onnx package
// (the snippet saves its model to sys.argv[1]) and returns its path.
func onnxGraph(t *testing.T, name, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	prelude := "import sys, onnx\nfrom onnx import helper, TensorProto\n"
	if out, err := exec.Command(pyenv.Interpreter, "-c", prelude+script, path).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return path
}

const identityGraph = `
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
onnx.save(m, sys.argv[1])
`

func TestParseProvider(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind Provider
		dev  int
	}{{"", CPU, 0}, {"cpu", CPU, 0}, {"cuda", CUDA, 0}, {"cuda:1", CUDA, 1}, {"CUDA:0", CUDA, 0}, {"tensorrt", TensorRT, 0}, {"tensorrt:3", TensorRT, 3}} {
		kind, dev, err := ParseProvider(c.in)
		if err != nil || kind != c.kind || dev != c.dev {
			t.Errorf("%q: got %q %d %v, want %q %d", c.in, kind, dev, err, c.kind, c.dev)
		}
	}
	for _, bad := range []string{"npu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "gpu"} {
		if _, _, err := ParseProvider(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: got %v, want an error naming it", bad, err)
		}
	}
}

// TestGPUProviderMissingIsOneClearError asks the CPU build of ONNX Runtime
// (this machine's) for CUDA and TensorRT: opening must fail, nothing falls
// back to CPU, and the error is one line saying what was asked, that this
// library has no such provider and how to get one that has.
func TestGPUProviderMissingIsOneClearError(t *testing.T) {
	path := onnxGraph(t, "id.onnx", identityGraph)
	if _, err := OpenSession(path, SessionOptions{Provider: "npu"}); err == nil || !strings.Contains(err.Error(), "npu") {
		t.Fatalf("an unknown provider is a configuration error, got %v", err)
	}
	s, err := OpenSession(path, SessionOptions{Provider: "cpu"})
	if err != nil || s.Provider != CPU {
		t.Fatalf("cpu: %v", err)
	}
	s.Close()
	for _, c := range []struct {
		asked      Provider
		says, file string
	}{
		{"cuda", "cuda:0 asked for", "libonnxruntime_providers_cuda.so is not beside it"},
		{"cuda:1", "cuda:1 asked for", "libonnxruntime_providers_cuda.so is not beside it"},
		{"tensorrt", "tensorrt:0 asked for", "libonnxruntime_providers_tensorrt.so is not beside it"},
	} {
		for name, err := range map[string]error{"OpenSession": openErr(path, c.asked), "CheckProvider": CheckProvider(c.asked)} {
			if !errors.Is(err, ErrProvider) {
				t.Fatalf("%s(%s) on the CPU build: got %v, want ErrProvider", name, c.asked, err)
			}
			msg := err.Error()
			kind, _, _ := ParseProvider(string(c.asked))
			for _, want := range []string{c.says, "has no " + displayName(kind) + " provider", c.file, "libonnxruntime.so.1",
				install.Pinned().Version, "--ort-lib", LibraryEnv, "onnxruntime-linux-x64-gpu-" + install.Pinned().Version + ".tgz", "CUDA 12", "cuDNN 9", "--provider cpu"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%s(%s): %q does not say %q", name, c.asked, msg, want)
				}
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("%s(%s): not one line: %q", name, c.asked, msg)
			}
		}
	}
}

func openErr(path string, p Provider) error {
	s, err := OpenSession(path, SessionOptions{Provider: p})
	if err == nil {
		s.Close()
	}
	return err
}

// TestProviderLibraryLookup: the provider libraries count as present beside
// the loaded library or in $LD_LIBRARY_PATH; present but unloadable ones
// give ONNX Runtime's own reason, not "has no provider".
func TestProviderLibraryLookup(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	other := t.TempDir()
	t.Setenv("LD_LIBRARY_PATH", "")
	if got := missingProviderLibrary(CUDA, lib); got != "libonnxruntime_providers_cuda.so" {
		t.Fatalf("empty folder: missing %q", got)
	}
	for _, f := range []string{filepath.Join(filepath.Dir(lib), "libonnxruntime_providers_shared.so"), filepath.Join(other, "libonnxruntime_providers_cuda.so")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := missingProviderLibrary(CUDA, lib); got != "libonnxruntime_providers_cuda.so" {
		t.Fatalf("cuda library elsewhere: missing %q", got)
	}
	if got := missingProviderLibrary(TensorRT, lib); got != "libonnxruntime_providers_tensorrt.so" {
		t.Fatalf("tensorrt: missing %q", got)
	}
	t.Setenv("LD_LIBRARY_PATH", "/nonexistent:"+other)
	if got := missingProviderLibrary(CUDA, lib); got != "" {
		t.Fatalf("cuda library in LD_LIBRARY_PATH: missing %q", got)
	}
	if got := missingProviderLibrary(TensorRT, lib); got != "libonnxruntime_providers_tensorrt.so" {
		t.Fatalf("tensorrt: missing %q", got)
	}

	// Empty files where the loaded library's provider libraries would be
	// (LD_LIBRARY_PATH is read once by the dynamic linker, so ONNX Runtime
	// still cannot load them): the error is ONNX Runtime's reason.
	runtimeMu.Lock()
	real := runtimePath
	runtimeMu.Unlock()
	fake := t.TempDir()
	for _, f := range providerLibraries[CUDA] {
		if err := os.WriteFile(filepath.Join(fake, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("LD_LIBRARY_PATH", fake)
	err := CheckProvider("cuda")
	if !errors.Is(err, ErrProvider) || !strings.Contains(err.Error(), "could not start its CUDA provider") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("provider libraries present but unloadable (%s): got %v", real, err)
	}
}
