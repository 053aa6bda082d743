package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	for _, want := range []string{"htcstream   " + version, "opencv      4.6", "ffmpeg      5.1", "onnxruntime 1.22.0"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestBadInputGetsOneLineAndNonZeroExit(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.mp4")
	cases := []struct {
		args []string
		code int
		says string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"run"}, 2, "want exactly one SOURCE"},
		{[]string{"run", "--scale", "big", "x.mp4"}, 2, "--scale"},
		{[]string{"run", "--no-such-flag", "x.mp4"}, 2, "no-such-flag"},
		{[]string{"run", missing}, 1, missing},
		{[]string{"run", "gopher://x/y"}, 1, `unknown scheme "gopher"`},
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

func TestRunDecodesAndPreparesEveryFrame(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mkv")
	if b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=2",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	code, out, errOut := call("run", "--scale", "320x240", clip)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"frames      20 of 160x120", "resize to 320x240"} {
		if !strings.Contains(out, want) {
			t.Errorf("run output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = call("run", "--max-frames", "7", clip)
	if code != 0 || !strings.Contains(out, "frames      7 of") {
		t.Errorf("--max-frames 7: exit %d\n%s", code, out)
	}
}
