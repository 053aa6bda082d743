package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// mmdetCheckpoint writes a checkpoint laid out as mmdetection's released HTC
// R-50 (names, shapes, container; random weights) with the training module's
// test helper, as a user's download would be.
func mmdetCheckpoint(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	path := filepath.Join(dir, "htc_r50_fpn_1x_coco.pth")
	args := append([]string{"../../training/tests/mmdet_testutil.py", "--out", path}, extra...)
	if b, err := exec.Command(python, args...).CombinedOutput(); err != nil {
		t.Fatalf("mmdet_testutil: %v\n%s", err, b)
	}
	return path
}

// cocoNames are a few of COCO's 80 detection classes, first and last among them.
var cocoNames = []string{"person", "bicycle", "car", "toothbrush", "hair drier", "teddy bear"}

// TestReleasedHTCCheckpointRunsEndToEnd: a released-layout R-50 checkpoint is
// exported to a bundle without any config, and run over a 1280x720 clip at
// the released 1333x800 test scale; the JSON lines name COCO classes.
func TestReleasedHTCCheckpointRunsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("exports and runs a real-size R-50 HTC (about a minute)")
	}
	dir := t.TempDir()
	ckpt := mmdetCheckpoint(t, dir)
	bundleDir := filepath.Join(dir, "htc_r50")
	code, out, errOut := call("export", "--out", bundleDir, "--checkpoint", ckpt)
	if code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	manifest, err := os.ReadFile(filepath.Join(bundleDir, "manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"layout: cocostuff", "test_scales: [[1333, 800]]", "person", "sky-other"} {
		if !strings.Contains(string(manifest), want) {
			t.Errorf("manifest lacks %q", want)
		}
	}

	clip := makeClip(t, "testsrc2=s=1280x720:r=10:d=0.2")
	dets, video := filepath.Join(dir, "d.jsonl"), filepath.Join(dir, "o.mp4")
	// random weights score every class about 1/81: a low threshold keeps detections
	code, out, errOut = call("run", "--model", bundleDir, "--score-threshold", "0.01", "--stuff-tint", "0.3",
		"--detections", dets, "--out", video, clip)
	if code != 0 {
		t.Fatalf("run: exit %d\n%s%s", code, out, errOut)
	}
	f, err := os.Open(dets)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m struct {
		Things   []string
		Semantic struct {
			Classes []string
			Stuff   []int
		}
	}
	if err := yaml.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	stuffNames := map[string]bool{}
	for _, c := range m.Semantic.Stuff {
		stuffNames[m.Semantic.Classes[c]] = true
	}
	if len(m.Semantic.Classes) != 183 || !stuffNames["sky-other"] || stuffNames["person"] {
		t.Errorf("semantic section: %d classes, stuff %v", len(m.Semantic.Classes), m.Semantic.Stuff)
	}
	known := map[string]bool{}
	for _, n := range m.Things {
		known[n] = true
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<22), 1<<22)
	frames, labels := 0, map[string]bool{}
	for sc.Scan() {
		var rec struct {
			Width, Height int
			Detections    []struct {
				Label       string
				StageScores []float64 `json:"stage_scores"`
			}
			Stuff *[]struct{ Label string }
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("line %d: %v", frames+1, err)
		}
		frames++
		if rec.Width != 1280 || rec.Height != 720 {
			t.Errorf("frame %d is %dx%d", frames, rec.Width, rec.Height)
		}
		if len(rec.Detections) == 0 {
			t.Errorf("frame %d: no detections", frames)
		}
		// --stuff-tint makes the semantic map: the line names its stuff regions
		if rec.Stuff == nil {
			t.Errorf("frame %d: no stuff key with --stuff-tint", frames)
		} else {
			for _, r := range *rec.Stuff {
				if !stuffNames[r.Label] {
					t.Errorf("frame %d: stuff region %q is not a COCO-stuff stuff name", frames, r.Label)
				}
			}
		}
		for _, d := range rec.Detections {
			labels[d.Label] = true
			if len(d.StageScores) != 3 {
				t.Errorf("%s: %d stage scores", d.Label, len(d.StageScores))
			}
		}
	}
	if frames != 2 {
		t.Errorf("%d JSON lines for a 2-frame clip", frames)
	}
	for l := range labels {
		if !known[l] {
			t.Errorf("label %q is not one of the manifest's things", l)
		}
	}
	// the manifest's things were read from meta['CLASSES']: COCO's names
	for _, n := range cocoNames {
		if !known[n] {
			t.Errorf("manifest things lack COCO's %q", n)
		}
	}
	if len(known) != 80 {
		t.Errorf("%d thing names, want COCO's 80", len(known))
	}
}

// TestImportAndBadCheckpoints: import writes a training checkpoint; a
// truncated or foreign file is one line that names it.
func TestImportAndBadCheckpoints(t *testing.T) {
	dir := t.TempDir()
	ckpt := mmdetCheckpoint(t, dir, "--layout", "v1")
	ours := filepath.Join(dir, "ours.pth")
	code, out, errOut := call("import", "--checkpoint", ckpt, "--out", ours)
	if code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "mmdetection v1 checkpoint") || !strings.Contains(out, "ResNet-50") {
		t.Errorf("import output: %s", out)
	}
	if st, err := os.Stat(ours); err != nil || st.Size() < 100<<20 {
		t.Fatalf("import wrote %v, %v", st, err)
	}

	b, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pth")
	if err := os.WriteFile(cut, b[:len(b)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "notes.pth")
	if err := os.WriteFile(text, []byte("just text\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"export", "--checkpoint", cut, "--out", filepath.Join(dir, "b1")}, "cut.pth: not a readable PyTorch checkpoint"},
		{[]string{"import", "--checkpoint", text, "--out", filepath.Join(dir, "o.pth")}, "notes.pth: not a readable PyTorch checkpoint"},
		{[]string{"export", "--checkpoint", filepath.Join(dir, "none.pth"), "--out", filepath.Join(dir, "b2")}, "none.pth"},
	} {
		code, _, errOut := call(tc.args...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code == 0 || len(lines) != 1 || !strings.Contains(errOut, tc.says) {
			t.Errorf("%v: exit %d, want one line saying %q, got:\n%s", tc.args, code, tc.says, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "b1", "manifest.yaml")); err == nil {
		t.Error("a failed export left a manifest")
	}
}
