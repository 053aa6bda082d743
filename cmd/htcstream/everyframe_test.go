package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/rtsptest"
)

// jsonFrame is what these tests read of a detections line.
type jsonFrame struct {
	Seq        int64 `json:"seq"`
	Keyframe   bool  `json:"keyframe"`
	Detections []struct {
		Propagated bool `json:"propagated"`
	} `json:"detections"`
}

func readLines(t *testing.T, path string) []jsonFrame {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []jsonFrame
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l jsonFrame
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d: %v", len(out)+1, err)
		}
		out = append(out, l)
	}
	return out
}

// A camera that shows a still scene for 12 s, then a box moving in: with
// motion gating the model runs on the first frame and once per
// max_interval while nothing moves, then on the frames that move; every
// frame is still in the outputs, the skipped ones propagated.
func TestStillThenMotionRunsTheModelWhereThePictureChanged(t *testing.T) {
	dir := t.TempDir()
	clip := filepath.Join(dir, "still-then-motion.mp4")
	// 10 fps: 120 still frames, then 30 with a box walking in from the left
	args := []string{"-v", "error", "-f", "lavfi", "-i", "color=c=0x506070:s=320x240:r=10:d=15",
		"-f", "lavfi", "-i", "color=c=white:s=50x50:r=10:d=15",
		"-filter_complex", "[0]drawbox=x=20:y=20:w=60:h=40:color=0xc0a080:t=fill[bg];" +
			"[bg][1]overlay=x='if(gte(t,12),-60+(t-12)*80,-1000)':y=120:eval=frame",
		"-frames:v", "150", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", clip}
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	cfg := filepath.Join(dir, "motion.yaml")
	if err := os.WriteFile(cfg, []byte("motion:\n  enabled: true\n  max_interval: 5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	jsonl := filepath.Join(dir, "out.jsonl")
	code, out, errOut := call("run", "--model", bundle, "--config", cfg, "--detections", jsonl, clip)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := readLines(t, jsonl)
	if len(lines) != 150 {
		t.Fatalf("%d lines for 150 frames", len(lines))
	}
	still, moving := 0, 0
	for i, l := range lines {
		if l.Seq != int64(i) {
			t.Fatalf("line %d is frame %d", i, l.Seq)
		}
		for _, d := range l.Detections {
			if d.Propagated == l.Keyframe {
				t.Fatalf("frame %d: keyframe %v with a detection propagated %v", i, l.Keyframe, d.Propagated)
			}
		}
		switch {
		case !l.Keyframe:
		case i < 120:
			still++
		case i > 122: // the box is in the picture from frame 122 on
			moving++
		}
	}
	// 12 s still with max_interval 5 s: frames 0, 50 and 100
	if still > 1+12/5 {
		t.Fatalf("the model ran on %d still frames, at most %d expected", still, 1+12/5)
	}
	if moving < 20 {
		t.Fatalf("the model ran on %d of the 27 frames where the box moves", moving)
	}
	if !strings.Contains(out, "still") {
		t.Errorf("the summary does not count the still frames:\n%s", out)
	}
}

// The model on every third frame of the sample, the tracker in between
// (smooth timing): the AP it keeps. Every frame gives 0.551 box / 0.516
// mask AP; interval 3 measured 0.529 / 0.488 (docs/benchmarks.md).
func TestIntervalThreeKeepsItsAP(t *testing.T) {
	statsOut := filepath.Join(t.TempDir(), "stats.json")
	code, out, errOut := call("eval", "--model", bundle, "--data", "../../examples/sample.mp4", "--interval", "3", "--out", statsOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var stats struct {
		Images    int
		Keyframes int
		BBox      struct{ AP float64 } `json:"bbox"`
		Segm      struct{ AP float64 } `json:"segm"`
	}
	b, err := os.ReadFile(statsOut)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &stats); err != nil {
		t.Fatal(err)
	}
	if stats.Images != 150 || stats.Keyframes != 50 {
		t.Fatalf("%d images, the model on %d:\n%s", stats.Images, stats.Keyframes, out)
	}
	if stats.BBox.AP < 0.50 || stats.Segm.AP < 0.46 {
		t.Fatalf("interval 3: box AP %.3f (floor 0.50), mask AP %.3f (floor 0.46)", stats.BBox.AP, stats.Segm.AP)
	}
}

// A camera at 25 fps (a real RTSP server playing the sample) against a
// model made slow on purpose (3 scales x flip: 6 views a frame, a few
// frames a second here): the annotated mp4 and the JSON lines still carry
// at least 95 % of the camera's frames, annotated.
func TestSlowModelLiveCameraKeepsEveryFrame(t *testing.T) {
	clip := rtsptest.MakeClipFrom(t, []string{"-i", "../../examples/sample.mp4"}, 320, 240, 150, 25)
	srv := rtsptest.StartServer(t, clip, 25, "", "")
	dir := t.TempDir()
	mp4, jsonl := filepath.Join(dir, "cam.mp4"), filepath.Join(dir, "cam.jsonl")
	const frames = 200
	code, out, errOut := call("run", "--model", bundle, "--tta", "256x256,320x320,416x416", "--flip",
		"--max-frames", strconv.Itoa(frames), "--out", mp4, "--detections", jsonl, srv.URL("/cam"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := readLines(t, jsonl)
	keys, annotated, first := 0, 0, -1
	for i, l := range lines {
		if i > 0 && l.Seq <= lines[i-1].Seq {
			t.Fatalf("line %d: frame %d after %d", i, l.Seq, lines[i-1].Seq)
		}
		if l.Keyframe {
			keys++
		}
		if len(l.Detections) > 0 {
			annotated++
			if first < 0 {
				first = i
			}
		}
	}
	b, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", mp4).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", mp4, err)
	}
	inMP4, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("ffprobe said %q", b)
	}
	t.Logf("%d frames from the camera: %d lines, %d in the mp4, the model on %d, %d annotated\n%s",
		frames, len(lines), inMP4, keys, annotated, out)
	if len(lines) < frames*95/100 || inMP4 < frames*95/100 {
		t.Fatalf("%d lines and %d mp4 frames of %d camera frames", len(lines), inMP4, frames)
	}
	// A slow model: it saw a fraction of the frames, the tracker the rest.
	if keys < 2 || keys > frames/2 {
		t.Fatalf("the model ran on %d of %d frames", keys, frames)
	}
	// Only the frames before the first result come bare (and those whose
	// last keyframe found nothing: the sample always shows something).
	if first < 0 || annotated < (len(lines)-first)*95/100 {
		t.Fatalf("%d of the %d frames after the first result annotated", annotated, len(lines)-first)
	}
}
