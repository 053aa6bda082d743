package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalComparesAnINT8BundleWithItsFloatBundle: the default bundle's
// INT8 form, quantised here on frames of a video (as export --quantize does),
// is held against the float bundle on the same frames, and the float bundle
// against itself agrees exactly.
func TestEvalComparesAnINT8BundleWithItsFloatBundle(t *testing.T) {
	root, err := trainingDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	clip := filepath.Join(dir, "clip.mp4")
	if b, err := exec.Command("ffmpeg", "-v", "error", "-i", "../../examples/sample.mp4", "-frames:v", "8",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	calib, err := calibrationImages("../../examples/sample.mp4", 3, filepath.Join(dir, "calib"))
	if err != nil {
		t.Fatal(err)
	}
	int8Bundle := filepath.Join(dir, "int8")
	abs, _ := filepath.Abs(bundle)
	var stderr bytes.Buffer
	if err := runPython(root, []string{"-m", "htc.quantize", "--bundle", abs, "--out", int8Bundle,
		"--calib-images", calib, "--num-images", "3", "--threads", "1"}, &bytes.Buffer{}, &stderr, nil); err != nil {
		t.Fatalf("htc.quantize: %v\n%s", err, stderr.String())
	}

	type report struct {
		Images    int
		Agreement struct {
			Reference, Model, Matched, Missing, Extra int
			ScoreDiff                                 struct{ Max float64 }       `json:"score_diff"`
			MaskIoU                                   struct{ Mean, Min float64 } `json:"mask_iou"`
		}
		BBox struct{ AP float64 } `json:"bbox"`
		Segm struct{ AP float64 } `json:"segm"`
	}
	compare := func(model string) (report, string) {
		t.Helper()
		out := filepath.Join(dir, "cmp.json")
		code, stdout, errOut := call("eval", "--model", model, "--reference", bundle, "--data", clip, "--threads", "1", "--out", out)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var r report
		b, _ := os.ReadFile(out)
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		return r, stdout
	}

	same, _ := compare(bundle)
	a := same.Agreement
	if same.Images != 8 || a.Reference == 0 || a.Matched != a.Reference || a.Model != a.Reference || a.Missing+a.Extra != 0 ||
		a.ScoreDiff.Max != 0 || a.MaskIoU.Min != 1 || same.BBox.AP != 1 || same.Segm.AP != 1 {
		t.Errorf("the float bundle against itself: %+v", same)
	}

	q, stdout := compare(int8Bundle)
	a = q.Agreement
	// the trained tiny model's INT8 form keeps its detections (docs/benchmarks.md,
	// "INT8 at real size": 99 % matched on the whole sample at 0.3)
	if q.Images != 8 || a.Matched < a.Reference*9/10 || a.MaskIoU.Mean < 0.9 || q.Segm.AP < 0.8 || q.BBox.AP < 0.8 {
		t.Errorf("INT8 against float: %+v\n%s", q, stdout)
	}
	for _, want := range []string{"detections at score >= 0.3: reference", "mask IoU mean", "missing (reference's", "*segm* (the reference's detections"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestEvalReferenceRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"--reference", bundle, "--data", "../../examples/sample.mp4", "--interval", "2"}, 2, "every frame"},
		{[]string{"--reference", bundle, "--data", "../../examples/sample.mp4", "--reference-score", "1"}, 2, "--reference-score 1"},
		{[]string{"--reference", bundle, "--data", filepath.Join(dir, "absent.mp4")}, 1, "no such file"},
		{[]string{"--reference", filepath.Join(dir, "nobundle"), "--data", "../../examples/sample.mp4"}, 1, "nobundle"},
	} {
		code, _, errOut := call(append([]string{"eval", "--model", bundle}, c.args...)...)
		if code != c.code || !strings.Contains(errOut, c.says) || strings.Count(strings.TrimSpace(errOut), "\n") > 1 {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, errOut, c.code, c.says)
		}
	}
}
