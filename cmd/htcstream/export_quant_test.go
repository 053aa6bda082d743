package main

import (
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The --quantize flags are checked before anything runs (the pass itself is
// training/tests/test_quantize.py).
func TestExportQuantizeFlagsAreCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "m.pth")
	if err := os.WriteFile(ckpt, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b")
	empty := filepath.Join(dir, "empty")
	if err := os.MkdirAll(filepath.Join(empty, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--quantize", "int4"}, `--quantize "int4"`},
		{[]string{"--quantize", "int8"}, "needs --calib-images"},
		{[]string{"--calib-images", dir}, "without --quantize"},
		{[]string{"--quantize", "int8"}, "a folder of images or a video"},
		{[]string{"--quantize", "int8", "--calib-images", ckpt}, "is neither a folder of images nor a readable video"},
		{[]string{"--quantize", "int8", "--calib-images", filepath.Join(dir, "absent")}, "no such file or directory"},
		{[]string{"--quantize", "int8", "--calib-images", empty}, "no .png/.jpg images in the folder"},
		{[]string{"--quantize", "int8", "--calib-images", dir, "--calib-count", "0"}, "--calib-count 0"},
	} {
		code, _, errOut := call(append([]string{"export", "--checkpoint", ckpt, "--out", out}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.says) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, errOut, c.says)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused export wrote %s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".b.float-*")); len(left) > 0 {
		t.Errorf("a refused export left %v", left)
	}
}

// A video given as --calib-images becomes --calib-count frames spread over
// it, written losslessly as PNG for htc.quantize to read.
func TestCalibrationFramesFromAVideo(t *testing.T) {
	dir := t.TempDir()
	video := filepath.Join(dir, "clip.mp4")
	// 30 frames whose frame number is burnt into a grey level: frame k is k*8
	if b, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=64x48:r=10:d=3",
		"-vf", "geq=lum='N*8':cb=128:cr=128", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", video).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	got, err := calibrationImages(video, 4, filepath.Join(dir, "calib"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(got, "*.png"))
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := []string{"frame_00000.png", "frame_00009.png", "frame_00019.png", "frame_00029.png"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("frames %v, want %v", names, want)
	}
	for i, f := range files {
		r, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		// luma k*8 in video (limited) range is max(0, (k*8-16)*255/219) in RGB
		seq := []int{0, 9, 19, 29}[i]
		want := max(0, (seq*8-16)*255/219)
		if g, _, _, _ := img.At(32, 24).RGBA(); absDiff(int(g>>8), want) > 3 {
			t.Errorf("%s: grey %d, want about %d (not the frame it is named for)", names[i], g>>8, want)
		}
	}
	// a folder is used as it is
	if got, err := calibrationImages(got, 4, filepath.Join(dir, "unused")); err != nil || got != filepath.Join(dir, "calib") {
		t.Errorf("folder: %q, %v", got, err)
	}
}

func absDiff(a, b int) int {
	if a > b {
		return a - b
	}
	return b - a
}
