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

	"github.com/htcstream/htcstream/internal/pyenv"
)

// TestDeformConvMatchesTorchvision runs ONNX's DeformConv (opset 19, the
// operator the DCN models export to) in the loaded runtime and compares it
// with torchvision's deform_conv2d, the op the training module runs, on
// random offsets large enough to sample between and outside pixels.
func TestDeformConvMatchesTorchvision(t *testing.T) {
	dir := t.TempDir()
	script := `
import sys, os, numpy as np, torch, torchvision, onnx
from onnx import helper, TensorProto, numpy_helper
d = sys.argv[1]
torch.manual_seed(0)
N, C, H, W, O, k, g = 1, 4, 7, 9, 6, 3, 2
x = torch.randn(N, C, H, W)
off = torch.randn(N, g * 2 * k * k, H, W) * 2
w = torch.randn(O, C, k, k)
b = torch.randn(O)
ref = torchvision.ops.deform_conv2d(x, off, w, b, padding=1)
node = helper.make_node("DeformConv", ["x", "w", "offset", "b"], ["y"], kernel_shape=[k, k],
                        pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1, offset_group=g)
graph = helper.make_graph([node], "deform",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, C, H, W]),
     helper.make_tensor_value_info("offset", TensorProto.FLOAT, [N, g * 2 * k * k, H, W])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, O, H, W])],
    [numpy_helper.from_array(w.numpy(), "w"), numpy_helper.from_array(b.numpy(), "b")])
m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
m.ir_version = 8  # python3-onnx 1.12 knows opset 17 at most: no checker here
onnx.save(m, os.path.join(d, "deform.onnx"))
for name, a in (("x", x), ("offset", off), ("ref", ref)):
    a.numpy().astype("<f4").tofile(os.path.join(d, name + ".bin"))
`
	if out, err := exec.Command(pyenv.Interpreter, "-c", script, dir).CombinedOutput(); err != nil {
		t.Fatalf("building the graph with python3-onnx and torchvision: %v\n%s", err, out)
	}
	s, err := OpenSession(filepath.Join(dir, "deform.onnx"), SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	read := func(name string) []float32 {
		b, err := os.ReadFile(filepath.Join(dir, name+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		return float32sLE(b)
	}
	x, err := ort.NewTensor(ort.NewShape(1, 4, 7, 9), read("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	off, err := ort.NewTensor(ort.NewShape(1, 2*2*9, 7, 9), read("offset"))
	if err != nil {
		t.Fatal(err)
	}
	defer off.Destroy()
	outs, err := s.Run(x, off)
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	y, shape, err := Float32Output(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	ref := read("ref")
	if len(shape) != 4 || len(y) != len(ref) {
		t.Fatalf("output shape %v (%d values), want %d values", shape, len(y), len(ref))
	}
	worst := 0.0
	for i := range y {
		worst = math.Max(worst, math.Abs(float64(y[i]-ref[i])))
	}
	if worst > 1e-4 {
		t.Fatalf("DeformConv differs from torchvision's deform_conv2d by up to %g", worst)
	}
	peak := 0.0
	for _, v := range ref {
		peak = math.Max(peak, math.Abs(float64(v)))
	}
	if peak < 1 {
		t.Fatalf("reference peaks at %g: the test data is degenerate", peak)
	}
	t.Logf("DeformConv vs torchvision deform_conv2d: max |diff| %.2g, max |ref| %.3g", worst, peak)
}

func float32sLE(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return out
}

// TestMissingKernelNamesTheRuntimeNeeded feeds missingKernel the error ONNX
// Runtime 1.22.0 gives for a DeformConv graph (recorded from that library;
// one process can load only one runtime) and checks the line a user sees.
func TestMissingKernelNamesTheRuntimeNeeded(t *testing.T) {
	orig := errors.New("Error loading temporary session: Could not find an implementation for DeformConv(19) node with name ''")
	err := missingKernel(orig)
	if !errors.Is(err, ErrMissingKernel) {
		t.Fatalf("got %v, want ErrMissingKernel", err)
	}
	msg := err.Error()
	for _, want := range []string{"DeformConv", "ONNX Runtime " + RuntimeVersion(), "1.30 or newer", "scripts/setup", "--ort-lib"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("%q is more than one line", msg)
	}
	if other := errors.New("Load model from x.onnx failed: protobuf parsing failed"); missingKernel(other) != other {
		t.Error("an unrelated error was rewritten")
	}
}
