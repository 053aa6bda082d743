package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/install"
)

// TestGPUProviderOnTheCPULibraryIsOneLine asks run, eval and bench (by flag
// and by config key) for CUDA or TensorRT with this machine's CPU build of
// ONNX Runtime: exit 1, nothing on standard output, one line on standard
// error saying what was asked, that the library has no such provider and how
// to get one; no panic, no ONNX Runtime log. A misspelt provider is a usage
// error (exit 2), and version lists the providers the library gives.
func TestGPUProviderOnTheCPULibraryIsOneLine(t *testing.T) {
	model, _ := filepath.Abs(bundle)
	sample, _ := filepath.Abs("../../examples/sample.mp4")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gpu.yaml")
	// a COCO set of one image: eval reads it before the model
	val := filepath.Join(dir, "instances.json")
	for name, text := range map[string]string{cfg: "model:\n  provider: tensorrt:1\n",
		val: `{"images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}], "annotations": [], "categories": [{"id": 1, "name": "person"}]}`} {
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args        []string
		code        int
		says, lacks string
	}{
		{[]string{"bench", "--model", model, "--provider", "cuda", "--frames", "1", sample}, 1, "cuda:0 asked for", "has no CUDA provider"},
		{[]string{"run", "--model", model, "--provider", "cuda:1", "--max-frames", "1", "--detections", os.DevNull, sample}, 1, "cuda:1 asked for", "has no CUDA provider"},
		{[]string{"run", "--model", model, "--config", cfg, "--max-frames", "1", "--detections", os.DevNull, sample}, 1, "tensorrt:1 asked for", "has no TensorRT provider"},
		{[]string{"eval", "--model", model, "--provider", "tensorrt", "--data", val, "--images", dir}, 1, "tensorrt:0 asked for", "has no TensorRT provider"},
		{[]string{"bench", "--model", model, "--provider", "gpu", sample}, 2, `unknown execution provider "gpu"`, "cuda[:N] or tensorrt[:N]"},
	} {
		var out, errb bytes.Buffer
		cmd := asMain(dir, c.args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		msg := errb.String()
		if !ok || ee.ExitCode() != c.code || out.Len() != 0 || strings.Count(msg, "\n") != 1 {
			t.Errorf("%v: %v, stdout %q, stderr %q; want exit %d, nothing on stdout and one line on stderr", c.args, err, out.String(), msg, c.code)
			continue
		}
		want := []string{"htcstream " + c.args[0] + ": ", c.says, c.lacks}
		if c.code == 1 {
			want = append(want, "--ort-lib", "HTCSTREAM_ORT_LIB", "GPU build", install.Pinned().Version, "CUDA 12", "--provider cpu")
		}
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("%v: %q does not say %q", c.args, msg, w)
			}
		}
		if strings.Contains(msg, "panic") || strings.Contains(msg, "onnxruntime::") {
			t.Errorf("%v: %q", c.args, msg)
		}
	}
	b, err := asMain(dir, "version").Output()
	if err != nil || !strings.Contains(string(b), "providers   cpu, no cuda, no tensorrt\n") {
		t.Errorf("version: %v\n%s", err, b)
	}
}
