package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/install"
)

func call(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = realMain(args, &o, &e)
	return code, o.String(), e.String()
}

func TestVersionNamesTheLoadedLibraries(t *testing.T) {
	code, out, errOut := call("version")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"htcstream   " + version, "opencv      4.6", "ffmpeg      5.1", "onnxruntime " + install.Pinned().Version} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

// bundle is the bundled default model, from this package's folder.
const bundle = "../../examples/models/htc_tiny_synthetic"

func TestBadInputGetsOneLineAndNonZeroExit(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.mp4")
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("model:\n  bundel: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notBundle := t.TempDir()
	clip := makeClip(t, "testsrc2=s=64x48:r=10:d=1")
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"run", "--out", "x.mp4"}, 2, "no SOURCE"},
		{[]string{"run", clip}, 2, "nothing to produce"},
		{[]string{"run", "--tta", "big", "--out", "o.mp4", clip}, 2, "--tta"},
		{[]string{"run", "--no-such-flag", "x.mp4"}, 2, "no-such-flag"},
		// issue 21 D6, D3: NaN passed 't < 0 || t >= 1'; 100000 threads sat silent growing to GBs
		{[]string{"run", "--score-threshold", "NaN", "--out", "o.mp4", clip}, 2, "score_threshold NaN"},
		{[]string{"bench", "--score-threshold", "NaN", "--model", bundle, clip}, 2, "--score-threshold NaN"},
		{[]string{"run", "--threads", "100000", "--out", "o.mp4", clip}, 2, "threads 100000"},
		{[]string{"bench", "--threads", "100000", "--model", bundle, clip}, 2, "--threads 100000"},
		{[]string{"run", "--out", "o.mp4", missing}, 1, missing},
		{[]string{"run", missing}, 1, "missing.mp4: no such file"}, // issue 21: before "nothing to produce"
		{[]string{"run", "--out", "o.mp4", "gopher://x/y"}, 1, `unknown scheme "gopher"`},
		{[]string{"run", "--config", badConfig, "--out", "o.mp4", clip}, 2, `line 2: unknown key "model.bundel"`},
		{[]string{"run", "--model", notBundle, "--out", "o.mp4", clip}, 1, "manifest.yaml"},
		{[]string{"run", "--model", bundle, "--out", filepath.Join(dir, "no", "such", "o.mp4"), clip}, 1, "no/such"},
		{[]string{"eval", "--model", bundle, "--data", missing}, 1, "missing"},
		{[]string{"version", "--ort-lib", missing}, 1, missing},
	}
	for _, c := range cases {
		code, _, errOut := call(c.args...)
		if code != c.code || !strings.Contains(errOut, c.says) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d saying %q", c.args, code, errOut, c.code, c.says)
		}
		if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
			t.Errorf("%v: %s", c.args, errOut)
		}
	}
}

func makeClip(t *testing.T, source string) string {
	t.Helper()
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	if b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source,
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return clip
}

// TestRunWritesVideoAndDetections runs the bundled model over the sample
// video's first frames: the mp4 has every frame and the JSON lines one line
// per frame, in order.
func TestRunWritesVideoAndDetections(t *testing.T) {
	dir := t.TempDir()
	video, dets := filepath.Join(dir, "out.mp4"), filepath.Join(dir, "out.jsonl")
	code, out, errOut := call("run", "--model", bundle, "--max-frames", "6", "--out", video, "--detections", dets, "../../examples/sample.mp4")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "6 frames in, 6 out, 0 dropped") {
		t.Errorf("run output:\n%s", out)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", video).Output()
	if err != nil || strings.TrimSpace(string(probe)) != "320,240,6" {
		t.Fatalf("ffprobe: %q, %v", probe, err)
	}
	b, err := os.ReadFile(dets)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d detection lines", len(lines))
	}
	for i, l := range lines {
		var rec struct {
			Seq        int64 `json:"seq"`
			Detections []struct {
				Score float64 `json:"score"`
				Label string  `json:"label"`
			} `json:"detections"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Seq != int64(i) {
			t.Fatalf("line %d: seq %d, %v", i, rec.Seq, err)
		}
		for _, d := range rec.Detections {
			if d.Score < 0.3 || d.Label == "" {
				t.Fatalf("line %d: detection %+v below the display threshold or unnamed", i, d)
			}
		}
	}
}

// TestTrainAndExportThroughTheCLI trains one tiny epoch through htcstream
// train (the Python trainer, its JSON records relayed) and exports the
// checkpoint with htcstream export; the bundle then loads in Go.
func TestTrainAndExportThroughTheCLI(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := call("train", "--config", "../../configs/model/htc_tiny.yaml", "--work-dir", dir, "--",
		"--epochs", "1", "--set", "data.root="+filepath.Join(dir, "data"), "--set", "data.num_train_images=4",
		"--set", "data.num_val_images=2", "--set", "train.batch_size=2", "--set", "data.img_scales=[[96, 96]]",
		"--set", "data.test_scale=[96, 96]", "--set", "train.evaluate=false")
	if code != 0 {
		t.Fatalf("train: exit %d\n%s\n%s", code, out, errOut)
	}
	// the trainer reports the checkpoint once (stderr); the relay adds the summary
	epoch1 := filepath.Join(dir, "epoch_1.pth")
	if strings.Count(out+errOut, epoch1) != 1 || !strings.Contains(errOut, "; saved "+epoch1) ||
		!strings.Contains(out, "last step: epoch 1/1 iter 2/2") {
		t.Fatalf("train output:\n%s\nstderr:\n%s", out, errOut)
	}
	b := filepath.Join(dir, "bundle")
	if code, out, errOut := call("export", "--checkpoint", filepath.Join(dir, "latest.pth"), "--out", b, "--", "--no-fixture"); code != 0 {
		t.Fatalf("export: exit %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := call("bench", "--model", b, "--frames", "1", "../../examples/sample.mp4"); code != 0 {
		t.Fatalf("the exported bundle does not run: %s", errOut)
	}
	if code, _, errOut := call("train", "--config", filepath.Join(dir, "nope.yaml")); code != 1 || !strings.Contains(errOut, "nope.yaml") {
		t.Fatalf("missing config: exit %d, %s", code, errOut)
	}
	if code, _, errOut := call("train", "--config", "../../configs/model/htc_tiny.yaml", "--", "--set", "train.lrr=1"); code != 1 || !strings.Contains(errOut, "lrr") {
		t.Fatalf("bad key: exit %d, %s", code, errOut)
	}
}

// TTA and stage weights set in a run config give the detections the same
// settings give as flags, and differ from the single view's.
func TestRunConfigTTAEqualsFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tta.yaml")
	yaml := "model:\n  tta_scales: [[320, 320], [416, 416]]\n  flip: true\n  stage_weights: [1, 0.5, 0.25]\n  score_threshold: 0.05\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	runs := 0
	detections := func(args ...string) string {
		t.Helper()
		runs++
		out := filepath.Join(dir, fmt.Sprintf("run%d.jsonl", runs))
		args = append([]string{"run", "--model", bundle, "--max-frames", "2", "--detections", out}, args...)
		if code, _, errOut := call(append(args, "../../examples/sample.mp4")...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		// Timestamps of processing differ between runs; the detections must not.
		var frames []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var rec struct {
				Detections json.RawMessage `json:"detections"`
			}
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatal(err)
			}
			frames = append(frames, string(rec.Detections))
		}
		return strings.Join(frames, "\n")
	}
	fromConfig := detections("--config", cfg)
	fromFlags := detections("--tta", "320x320,416x416", "--flip", "--stage-weights", "1,0.5,0.25", "--score-threshold", "0.05")
	single := detections("--score-threshold", "0.05")
	if fromConfig != fromFlags {
		t.Errorf("config and flags differ:\n%s\n---\n%s", fromConfig, fromFlags)
	}
	if fromConfig == single {
		t.Errorf("TTA gave the single view's detections")
	}
}
