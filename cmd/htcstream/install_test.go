package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/infer"
)

// A binary built as `go build`/`go install` make it and copied into an empty
// folder, with no checkout above it, no third_party/ and a new user's empty
// home: it says to run setup, setup installs the ONNX Runtime library and
// the embedded default model, and then it runs a video from that folder.
func TestInstalledBinaryWorksFromAnEmptyFolder(t *testing.T) {
	lib, err := infer.FindLibrary("")
	if err != nil {
		t.Fatalf("the checkout's library is needed to install from: %v", err)
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	work := filepath.Join(dir, "somewhere")
	for _, d := range []string{home, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(work, "htcstream")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sample, err := filepath.Abs("../../examples/sample.mp4")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Link(sample, filepath.Join(work, "clip.mp4")); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = work
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("run", "clip.mp4", "--detections", "x.jsonl", "--max-frames", "2")
	if err == nil || !strings.Contains(out, "htcstream setup") {
		t.Fatalf("before setup, run should fail and say to run htcstream setup: %v\n%s", err, out)
	}
	out, err = run("setup", "--ort-lib", lib)
	if err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	wantLib := filepath.Join(home, ".local/share/htcstream/onnxruntime/lib/libonnxruntime.so.1")
	if !strings.Contains(out, "onnxruntime 1.") || !strings.Contains(out, wantLib) || !strings.Contains(out, "default model at "+filepath.Join(home, ".local/share/htcstream/models/")) {
		t.Fatalf("setup output:\n%s", out)
	}
	// flags before and after the source, as a user types them
	out, err = run("run", "--max-frames", "2", "clip.mp4", "--detections", "x.jsonl")
	if err != nil {
		t.Fatalf("run after setup: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(work, "x.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 2 || !strings.Contains(string(b), `"detections":[{`) {
		t.Fatalf("x.jsonl has %d lines:\n%.500s", lines, b)
	}
}
