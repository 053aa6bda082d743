package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// asMain runs this test binary as htcstream (TestMain's HTCSTREAM_AS_MAIN)
// in dir, as a user's shell would.
func asMain(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	// the test binary lives in a temporary folder, not beside the project's
	// ONNX Runtime library as bin/htcstream does
	lib, _ := filepath.Abs("../../third_party/onnxruntime/lib/libonnxruntime.so.1")
	cmd.Env = append(os.Environ(), "HTCSTREAM_AS_MAIN=1")
	if os.Getenv("HTCSTREAM_ORT_LIB") == "" {
		cmd.Env = append(cmd.Env, "HTCSTREAM_ORT_LIB="+lib)
	}
	return cmd
}

// TestCLIBehavesAsUsersExpect: flags after sources, '-' for stdout with the
// summary on stderr, /dev/null, help on stdout, --version, and one-line
// refusals for a non-mp4 video, one path for two outputs and a huge scale.
func TestCLIBehavesAsUsersExpect(t *testing.T) {
	model, _ := filepath.Abs(bundle)
	sample, _ := filepath.Abs("../../examples/sample.mp4")
	dir := t.TempDir() // not the project: paths resolve against here

	var out, errb bytes.Buffer
	cmd := asMain(dir, "run", sample, "--max-frames", "3", "--detections", "-", "--model", model)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("run with '-': %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for _, l := range lines {
		var rec struct{ Seq int64 }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("stdout holds more than JSON lines: %q", l)
		}
	}
	if len(lines) != 3 || !strings.Contains(errb.String(), "stream sample: 3 frames in, 3 out") {
		t.Errorf("%d lines on stdout; stderr:\n%s", len(lines), errb.String())
	}

	if b, err := asMain(dir, "run", "--detections", os.DevNull, sample, "--max-frames", "1", "--model", model).CombinedOutput(); err != nil {
		t.Errorf("/dev/null: %v\n%s", err, b)
	}
	if b, err := asMain(dir, "run", "-h").Output(); err != nil || !strings.Contains(string(b), "--detections") {
		t.Errorf("run -h on stdout: %v %q", err, b)
	}
	// help COMMAND prints that command's flags, for every command (issue 21, 5)
	for _, c := range commands() {
		b, err := asMain(dir, "help", c.name).Output()
		want, _ := asMain(dir, c.name, "-h").Output()
		if err != nil || len(b) == 0 || !bytes.Equal(b, want) || strings.Contains(string(b), "Commands:") {
			t.Errorf("help %s: %v %q; want %s -h's %q", c.name, err, b, c.name, want)
		}
	}
	if b, err := asMain(dir, "help", "nosuch").CombinedOutput(); err == nil || !strings.Contains(string(b), `unknown command "nosuch"`) {
		t.Errorf("help nosuch: %v %q", err, b)
	}
	if b, err := asMain(dir, "--version").Output(); err != nil || !strings.HasPrefix(string(b), "htcstream   "+version) {
		t.Errorf("--version: %v %q", err, b)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"run", sample, "--out", "x.avi"}, ".mp4 files only"},
		{[]string{"run", sample, "--out", "same.mp4", "--detections", "same.mp4"}, "are both"},
		{[]string{"run", sample, "--tta", "100000x100000", "--out", "o.mp4"}, "above 4096"},
		{[]string{"run", sample, "--bogus"}, "unknown flag: --bogus"},
	} {
		var e bytes.Buffer
		cmd := asMain(dir, c.args...)
		cmd.Stderr = &e
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || strings.Count(strings.TrimSpace(e.String()), "\n") != 0 || !strings.Contains(e.String(), c.says) {
			t.Errorf("%v: %v, stderr %q; want exit 2 and one line saying %q", c.args, err, e.String(), c.says)
		}
	}
}

// TestInterruptedRunExits130WithCompleteOutputs: Ctrl-C on a file run
// finishes the frames in flight, leaves a playable mp4 and whole JSON
// lines, says the outputs end early, and exits 128 + the signal's number.
// SIGTERM (143) and SIGHUP (129, the terminal closed; issue 21 D5) do the
// same, never leaving a .partial without its moov.
func TestInterruptedRunExits130WithCompleteOutputs(t *testing.T) {
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}, {syscall.SIGHUP, 129}} {
		t.Run(c.sig.String(), func(t *testing.T) { interruptRun(t, c.sig, c.code) })
	}
}

func interruptRun(t *testing.T, sig syscall.Signal, code int) {
	model, _ := filepath.Abs(bundle)
	sample, _ := filepath.Abs("../../examples/sample.mp4")
	dir := t.TempDir()
	var out, errb bytes.Buffer
	cmd := asMain(dir, "run", sample, "--out", "o.mp4", "--detections", "d.jsonl", "--model", model)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// interrupt once frames are flowing
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dir, "d.jsonl")); bytes.Count(b, []byte("\n")) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != code {
		t.Fatalf("exit: %v, want %d\n%s", err, code, errb.String())
	}
	if !strings.Contains(out.String(), "o.mp4 (interrupted: ends early)") || !strings.Contains(out.String(), "d.jsonl (interrupted: ends early)") {
		t.Errorf("summary:\n%s", out.String())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.partial")); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "d.jsonl"))
	n := bytes.Count(b, []byte("\n"))
	if n < 3 || n >= 150 || !bytes.HasSuffix(b, []byte("\n")) {
		t.Errorf("%d JSON lines (want some, not all 150, each whole)", n)
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", filepath.Join(dir, "o.mp4")).Output()
	if err != nil || strings.TrimSpace(string(probe)) != itoa(n) {
		t.Errorf("mp4 frames %q (%v), JSON lines %d", probe, err, n)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// damagedClip is a 6 s clip with 8 KB of fixed junk in its middle.
func damagedClip(t *testing.T) string {
	t.Helper()
	clip := filepath.Join(t.TempDir(), "damaged.mp4")
	if b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=10:d=6",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	b, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	junk := rand.New(rand.NewPCG(21, 11))
	for i := len(b)/2 - 4000; i < len(b)/2+4000; i++ {
		b[i] = byte(junk.Uint32())
	}
	if err := os.WriteFile(clip, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return clip
}

// Issue 21 D11 and D10: a damaged input is warned of and its decode errors
// are in the summary (the run still succeeds: what decoded is written); an
// audio-only input or an mp4 without its moov writes no video, and the
// summary does not name one.
func TestRunReportsDamageAndUnwrittenVideo(t *testing.T) {
	model, _ := filepath.Abs(bundle)
	dir := t.TempDir()
	var out, errb bytes.Buffer
	cmd := asMain(dir, "run", damagedClip(t), "--out", "o.mp4", "--model", model)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("damaged input: %v\n%s", err, errb.String())
	}
	if !regexp.MustCompile(`stream damaged: \d+ frames in, \d+ out, 0 dropped, [1-9]\d* decode errors`).MatchString(out.String()) {
		t.Errorf("summary of a damaged input:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "damaged input") {
		t.Errorf("no warning of the damage:\n%s", errb.String())
	}

	audio := filepath.Join(dir, "audio.mp4")
	if b, err := exec.Command("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1",
		"-c:a", "aac", "-y", audio).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	whole, _ := os.ReadFile(damagedClip(t))
	noMoov := filepath.Join(dir, "nomoov.mp4")
	// the moov is at the end (ffmpeg's default): the first half has none
	os.WriteFile(noMoov, whole[:len(whole)/2], 0o644)
	for _, in := range []string{audio, noMoov} {
		out.Reset()
		errb.Reset()
		cmd := asMain(dir, "run", in, "--out", "v.mp4", "--model", model)
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.Run()
		v := filepath.Join(dir, "v.mp4")
		if _, err := os.Stat(v); err == nil {
			t.Errorf("%s: a video was written", in)
		}
		if strings.Contains(out.String(), "video: "+v) || !strings.Contains(out.String(), "video: none written") {
			t.Errorf("%s: summary:\n%s", in, out.String())
		}
	}
}
