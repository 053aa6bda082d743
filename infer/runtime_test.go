package infer

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/internal/install"
	"github.com/htcstream/htcstream/internal/pyenv"
)

func TestMain(m *testing.M) {
	path, err := FindLibrary("")
	if err == nil {
		err = InitRuntime(path)
	}
	if err != nil {
		// Every test here needs the library: say how to get it, once.
		os.Stderr.WriteString("infer tests: " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestFindLibraryOrder(t *testing.T) {
	dir := t.TempDir()
	viaFlag := filepath.Join(dir, "flag.so")
	viaEnv := filepath.Join(dir, "env.so")
	for _, p := range []string{viaFlag, viaEnv} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(LibraryEnv, viaEnv)
	if got, err := FindLibrary(viaFlag); err != nil || got != viaFlag {
		t.Fatalf("flag first: got %q, %v", got, err)
	}
	if got, err := FindLibrary(""); err != nil || got != viaEnv {
		t.Fatalf("env second: got %q, %v", got, err)
	}
	t.Setenv(LibraryEnv, filepath.Join(dir, "typo.so"))
	if _, err := FindLibrary(""); !errors.Is(err, ErrLibraryNotFound) || !strings.Contains(err.Error(), "typo.so") {
		t.Fatalf("a missing $%s file must be named in the error, got %v", LibraryEnv, err)
	}
	t.Setenv(LibraryEnv, "")
	if got, err := FindLibrary(""); err != nil || !strings.HasSuffix(got, ProjectLibrary) {
		t.Fatalf("project location third: got %q, %v", got, err)
	}
}

func TestFindLibraryNamesAllPlaces(t *testing.T) {
	t.Setenv(LibraryEnv, "")
	t.Chdir(t.TempDir())
	// go test binaries live in a temp dir, so no project install sits
	// beside them and the search must come up empty.
	got, err := FindLibrary("")
	if err == nil {
		t.Fatalf("found %s from an empty directory", got)
	}
	for _, want := range []string{"--ort-lib", LibraryEnv, ProjectLibrary, "scripts/setup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestRuntimeVersion(t *testing.T) {
	if v, want := RuntimeVersion(), install.Pinned().Version; v != want {
		t.Fatalf("loaded onnxruntime %q, want %s (internal/install/onnxruntime.env)", v, want)
	}
}

// TestSessionRunsExportedGraph builds a small graph with the onnx Python
// package (y = relu(x·W + b)), runs it in ONNX Runtime and checks the numbers
// against the same arithmetic in Go.
func TestSessionRunsExportedGraph(t *testing.T) {
	path := filepath.Join(t.TempDir(), "affine.onnx")
	script := `
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10 - 0.5
b = np.array([0.1, -0.2, 0.3, -5.0], dtype=np.float32)
g = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["xw"]),
     helper.make_node("Add", ["xw", "b"], ["z"]),
     helper.make_node("Relu", ["z"], ["y"])],
    "affine",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
`
	if out, err := exec.Command(pyenv.Interpreter, "-c", script, path).CombinedOutput(); err != nil {
		t.Fatalf("building the graph with python3-onnx: %v\n%s", err, out)
	}
	s, err := OpenSession(path, SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Inputs) != 1 || s.Inputs[0].Name != "x" || len(s.Outputs) != 1 || s.Outputs[0].Name != "y" {
		t.Fatalf("graph signature: inputs %v outputs %v", s.Inputs, s.Outputs)
	}
	x := []float32{1, 2, 3, -1, 0, 0.5}
	in, err := ort.NewTensor(ort.NewShape(2, 3), x)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Destroy()
	outs, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	y, shape, err := Float32Output(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != 2 || shape[1] != 4 {
		t.Fatalf("output shape %v, want [2 4]", shape)
	}
	b := []float32{0.1, -0.2, 0.3, -5.0}
	for r := 0; r < 2; r++ {
		for c := 0; c < 4; c++ {
			want := b[c]
			for k := 0; k < 3; k++ {
				w := float32(k*4+c)/10 - 0.5
				want += x[r*3+k] * w
			}
			want = float32(math.Max(0, float64(want)))
			if got := y[r*4+c]; math.Abs(float64(got-want)) > 1e-5 {
				t.Errorf("y[%d,%d] = %v, want %v", r, c, got, want)
			}
		}
	}
	if _, err := s.Run(); err == nil {
		t.Fatal("running with the wrong number of inputs must fail")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
