package infer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/pyenv"
)

const validManifest = `contract: htcstream-bundle/2
name: test
things: [a, b]
stuff: [s]
num_stages: 3
input:
  color: RGB
  mean: [1, 2, 3]
  std: [1, 1, 1]
  size_divisor: 32
  test_scales: [[320, 320]]
anchors:
  strides: [4, 8, 16, 32, 64]
  scales: [8]
  ratios: [0.5, 1.0, 2.0]
rpn:
  nms_pre: 1000
  nms_iou: 0.7
  max_proposals: 1000
  min_box_size: 0
  delta_clip: 4.135
rcnn:
  box_stds: [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
  score_threshold: 0.001
  nms_iou: 0.5
  max_per_image: 100
  mask_size: 28
  mask_threshold: 0.5
graphs:
  backbone: backbone.onnx
  bbox_stages: [s1.onnx, s2.onnx, s3.onnx]
  mask_heads: mask_heads.onnx
roi:
  size: 7
  sampling_ratio: 0
  finest_scale: 56.0
  strides: [4, 8, 16, 32]
  channels: 256
  semantic_size: 14
  semantic_stride: 8
`

func writeBundle(t *testing.T, manifest string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestManifestValidation(t *testing.T) {
	m, err := ReadManifest(writeBundle(t, validManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.NumStages != 3 || len(m.Things) != 2 || m.Normalization().Mean != [3]float32{1, 2, 3} || m.Input.TestScales[0] != [2]int{320, 320} ||
		len(m.Graphs.BBoxStages) != 3 || m.ROI == nil || m.ROI.Channels != 256 || m.ROI.SemanticSize != 14 {
		t.Fatalf("manifest read as %+v", m)
	}
	bad := []struct{ from, to, says string }{
		{"name: test", "name: test\ncolour: RGB", "colour"},
		{"htcstream-bundle/2", "htcstream-bundle/9", `contract "htcstream-bundle/9", this build reads "htcstream-bundle/2"`},
		{"things: [a, b]", "things: []", "no thing classes"},
		{"color: RGB", "color: BGR", "BGR"},
		{"std: [1, 1, 1]", "std: [1, 0, 1]", "input.std[1]"},
		{"strides: [4, 8, 16, 32, 64]", "strides: [4, 8, 16, 32]", "4 levels"},
		{"[0.05, 0.05, 0.1, 0.1], ", "", "2 rows for 3 stages"},
		{"mask_heads: mask_heads.onnx", "", "graphs must name"},
		{"[s1.onnx, s2.onnx, s3.onnx]", "[s1.onnx, s2.onnx]", "2 graphs for 3 stages"},
		{"[s1.onnx, s2.onnx, s3.onnx]", "[s1.onnx, '', s3.onnx]", "graphs.bbox_stages[1] is empty"},
		{"bbox_stages: [s1.onnx, s2.onnx, s3.onnx]", "bbox_stages: [s1.onnx, s2.onnx, s3.onnx]\n  bbox_heads: b.onnx", "bbox_heads"},
		{"strides: [4, 8, 16, 32]\n  channels", "strides: [4, 8, 16]\n  channels", "roi.strides has 3 levels"},
		{"semantic_size: 14", "semantic_size: 10", "roi.semantic_size 10"},
		{"channels: 256", "channels: 0", "roi.channels 0"},
		{"size: 7", "size: 0", "roi.size 0"},
		{"nms_pre: 1000", "nms_pre: lots", "lots"},
	}
	for _, b := range bad {
		dir := writeBundle(t, strings.Replace(validManifest, b.from, b.to, 1))
		_, err := ReadManifest(dir)
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), b.says) || !strings.Contains(err.Error(), "manifest.yaml") {
			t.Errorf("%q -> %q: got %v, want an error naming manifest.yaml and %q", b.from, b.to, err, b.says)
		}
	}
	if _, err := ReadManifest(t.TempDir()); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "manifest.yaml") {
		t.Errorf("missing manifest: %v", err)
	}
}

// validManifestV1 is a manifest of the retired contract 1, as htc.export
// wrote it before issue 14: one bbox_heads graph, no roi section.
var validManifestV1 = strings.Replace(strings.Replace(validManifest[:strings.Index(validManifest, "roi:")],
	"htcstream-bundle/2", "htcstream-bundle/1", 1),
	"  bbox_stages: [s1.onnx, s2.onnx, s3.onnx]\n", "  bbox_heads: bbox_heads.onnx\n", 1)

func TestManifestNeedsTheROISection(t *testing.T) {
	noRoi := validManifest[:strings.Index(validManifest, "roi:")]
	if _, err := ReadManifest(writeBundle(t, noRoi)); err == nil || !strings.Contains(err.Error(), "needs the roi section") {
		t.Errorf("contract 2 without roi: %v", err)
	}
}

// TestContractOneSaysHowToConvert: a bundle of the retired contract fails
// on one line that names its manifest and the two ways to a contract-2
// bundle, before any graph is opened.
func TestContractOneSaysHowToConvert(t *testing.T) {
	dir := writeBundle(t, validManifestV1)
	_, err := LoadBundle(dir, SessionOptions{})
	if !errors.Is(err, ErrBundle) {
		t.Fatalf("contract 1: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{filepath.Join(dir, "manifest.yaml"), "htcstream-bundle/1 is retired",
		"htcstream export --from-bundle " + dir, "--checkpoint"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
}

func TestLoadBundleNamesTheBrokenGraph(t *testing.T) {
	dir := writeBundle(t, validManifest)
	if _, err := LoadBundle(dir, SessionOptions{}); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "backbone.onnx") {
		t.Fatalf("missing graph: %v", err)
	}
	// A graph with the wrong signature where the backbone should be.
	script := `
import sys, onnx
from onnx import helper, TensorProto
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
onnx.save(m, sys.argv[1])
`
	if out, err := exec.Command(pyenv.Interpreter, "-c", script, filepath.Join(dir, "backbone.onnx")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	_, err := LoadBundle(dir, SessionOptions{})
	if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "backbone.onnx") || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("wrong signature: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "backbone.onnx"), []byte("not onnx"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBundle(dir, SessionOptions{}); !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), "backbone.onnx") {
		t.Fatalf("corrupt graph: %v", err)
	}
}
