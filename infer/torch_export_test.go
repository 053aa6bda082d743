package infer

import (
	"encoding/binary"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/internal/pyenv"
)

// TestTorchRoIAlignExportMatchesPyTorch exports torchvision's aligned RoIAlign
// (adaptive sampling, as HTC's RoI extractors use it) at opset 16 with
// PyTorch, runs the graph in ONNX Runtime and compares with PyTorch's own
// output. Below opset 16 the op's coordinate mode differs; this test is the
// guard that the bundle's graphs compute what training computed.
func TestTorchRoIAlignExportMatchesPyTorch(t *testing.T) {
	dir := t.TempDir()
	script := `
import sys, os, torch, torchvision
torch.manual_seed(0)
class M(torch.nn.Module):
    def forward(self, feat, rois):
        return torchvision.ops.roi_align(feat, rois, (7, 7), spatial_scale=0.25, sampling_ratio=0, aligned=True)
feat = torch.randn(1, 4, 16, 16)
rois = torch.tensor([[0, 3.0, 5.0, 40.0, 33.0], [0, 0.5, 0.5, 9.0, 2.5], [0, 10.0, 12.0, 63.0, 60.0]])
out = M()(feat, rois)
d = sys.argv[1]
torch.onnx.export(M(), (feat, rois), os.path.join(d, "roi.onnx"), opset_version=16,
                  input_names=["feat", "rois"], output_names=["out"], dynamic_axes={"rois": {0: "r"}, "out": {0: "r"}})
for name, t in (("feat", feat), ("rois", rois), ("out", out)):
    t.detach().numpy().astype("<f4").tofile(os.path.join(d, name + ".f32"))
`
	cmd := exec.Command(pyenv.Interpreter, "-W", "ignore", "-c", script, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("exporting with PyTorch: %v\n%s", err, out)
	}
	s, err := OpenSession(filepath.Join(dir, "roi.onnx"), SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	feat, err := ort.NewTensor(ort.NewShape(1, 4, 16, 16), readF32(t, filepath.Join(dir, "feat.f32")))
	if err != nil {
		t.Fatal(err)
	}
	defer feat.Destroy()
	rois, err := ort.NewTensor(ort.NewShape(3, 5), readF32(t, filepath.Join(dir, "rois.f32")))
	if err != nil {
		t.Fatal(err)
	}
	defer rois.Destroy()
	outs, err := s.Run(feat, rois)
	if err != nil {
		t.Fatal(err)
	}
	defer outs[0].Destroy()
	got, shape, err := Float32Output(outs[0])
	if err != nil {
		t.Fatal(err)
	}
	want := readF32(t, filepath.Join(dir, "out.f32"))
	if len(shape) != 4 || shape[0] != 3 || shape[1] != 4 || shape[2] != 7 || shape[3] != 7 || len(got) != len(want) {
		t.Fatalf("output shape %v (%d values), want [3 4 7 7]", shape, len(got))
	}
	var worst float64
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-5 {
		t.Fatalf("ONNX Runtime differs from PyTorch by up to %g", worst)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}
