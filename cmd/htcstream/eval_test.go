package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalReadsAnImageFolderAsRunDoes: a COCO set whose images are a
// folder is read through the run's source code. Frames the set does not
// list are skipped, and the set's images give the same AP as the same
// frames of the video.
func TestEvalReadsAnImageFolderAsRunDoes(t *testing.T) {
	dir := t.TempDir()
	images := filepath.Join(dir, "images", "val")
	if err := os.MkdirAll(images, 0o755); err != nil {
		t.Fatal(err)
	}
	// the sample's first 8 frames as the set's pictures, losslessly
	// named as the sample's ground truth names them, from frame_00000.png
	if b, err := exec.Command("ffmpeg", "-v", "error", "-i", "../../examples/sample.mp4", "-frames:v", "8",
		"-start_number", "0", filepath.Join(images, "frame_%05d.png")).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	var gt map[string]any
	b, err := os.ReadFile("../../examples/sample.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &gt); err != nil {
		t.Fatal(err)
	}
	// the set lists frames 0..5 only: 6 and 7 are in the folder but not in it
	keep := map[float64]bool{}
	var imgs, anns []any
	for _, im := range gt["images"].([]any) {
		m := im.(map[string]any)
		if m["id"].(float64) <= 6 {
			imgs = append(imgs, m)
			keep[m["id"].(float64)] = true
		}
	}
	for _, a := range gt["annotations"].([]any) {
		if keep[a.(map[string]any)["image_id"].(float64)] {
			anns = append(anns, a)
		}
	}
	gt["images"], gt["annotations"] = imgs, anns
	ann := filepath.Join(dir, "annotations", "instances_val.json")
	os.MkdirAll(filepath.Dir(ann), 0o755)
	b, _ = json.Marshal(gt)
	if err := os.WriteFile(ann, b, 0o644); err != nil {
		t.Fatal(err)
	}
	statsOut := filepath.Join(dir, "stats.json")
	code, out, errOut := call("eval", "--model", bundle, "--data", ann, "--out", statsOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "6 images, 1 views each") {
		t.Errorf("eval output:\n%s", out)
	}
	var stats struct {
		Images int
		BBox   struct{ AP float64 } `json:"bbox"`
		Segm   struct{ AP float64 } `json:"segm"`
	}
	b, _ = os.ReadFile(statsOut)
	if err := json.Unmarshal(b, &stats); err != nil {
		t.Fatal(err)
	}
	if stats.Images != 6 || stats.BBox.AP < 0.3 || stats.Segm.AP < 0.3 {
		t.Errorf("stats: %+v", stats)
	}
}
