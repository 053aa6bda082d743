package encode

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mediatest"
)

func writeFrames(t *testing.T, s *FileSink, w, h int, pts []time.Duration) [][]byte {
	t.Helper()
	var pics [][]byte
	for i, p := range pts {
		pic := mediatest.Pattern(w, h, i)
		if err := s.WriteFrame(w, h, pic, p); err != nil {
			t.Fatal(err)
		}
		pics = append(pics, pic)
	}
	return pics
}

func noFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (%v)", path, err)
	}
}

func TestFileSinkConstantRate(t *testing.T) {
	const w, h, n = 160, 120, 30
	path := filepath.Join(t.TempDir(), "cfr.mp4")
	s, err := NewFileSink(path, EncoderConfig{FrameRate: 15})
	if err != nil {
		t.Fatal(err)
	}
	pts := make([]time.Duration, n)
	for i := range pts {
		pts[i] = time.Duration(i) * time.Second / 15
	}
	pics := writeFrames(t, s, w, h, pts)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	noFile(t, path+".partial")

	info := mediatest.Probe(t, path)
	st := info.Streams[0]
	dur, _ := strconv.ParseFloat(info.Format.Duration, 64)
	if st.CodecName != "h264" || st.Width != w || st.Height != h || st.PixFmt != "yuv420p" || info.Frames(t) != n {
		t.Fatalf("ffprobe: %s %dx%d %s, %d frames; want h264 %dx%d yuv420p, %d frames", st.CodecName, st.Width, st.Height, st.PixFmt, info.Frames(t), w, h, n)
	}
	if !strings.Contains(info.Format.FormatName, "mp4") || st.Profile != "High" {
		t.Errorf("format %s profile %s, want mp4 High", info.Format.FormatName, st.Profile)
	}
	if dur < 1.99 || dur > 2.01 || st.AvgFrameRate != "15/1" || st.RFrameRate != "15/1" {
		t.Errorf("duration %v s, frame rate %s (avg %s); want 2 s at 15/1", dur, st.RFrameRate, st.AvgFrameRate)
	}

	frames := mediatest.DecodeFile(t, path)
	if len(frames) != n {
		t.Fatalf("decoded %d frames, want %d", len(frames), n)
	}
	for i, f := range frames {
		if (f.PTS - pts[i]).Abs() > time.Millisecond {
			t.Errorf("frame %d at %v, want %v", i, f.PTS, pts[i])
		}
		if p := mediatest.PSNR(pics[i], w, h, f.RGB, f.Width); p < 30 {
			t.Errorf("frame %d: PSNR %.1f dB, want > 30", i, p)
		} else if i == 0 || i == n-1 {
			t.Logf("frame %d: PSNR %.1f dB", i, p)
		}
	}
}

func TestFileSinkVariableRate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vfr.mp4")
	s, err := NewFileSink(path, EncoderConfig{FrameRate: 10})
	if err != nil {
		t.Fatal(err)
	}
	// Pairs 40 ms apart every 200 ms, as a source that stalls.
	var pts []time.Duration
	for i := 0; i < 10; i++ {
		pts = append(pts, time.Duration(i/2)*200*time.Millisecond+time.Duration(i%2)*40*time.Millisecond)
	}
	writeFrames(t, s, 64, 48, pts)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0",
		"-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) != len(pts) {
		t.Fatalf("ffprobe lists %d frames, want %d:\n%s", len(fields), len(pts), out)
	}
	for i, f := range fields {
		sec, err := strconv.ParseFloat(strings.TrimSuffix(f, ","), 64)
		if err != nil {
			t.Fatalf("frame %d time %q: %v", i, f, err)
		}
		if got := time.Duration(sec * float64(time.Second)); (got - pts[i]).Abs() > time.Millisecond {
			t.Errorf("frame %d at %v in the file, want %v", i, got, pts[i])
		}
	}
	for i, f := range mediatest.DecodeFile(t, path) {
		if (f.PTS - pts[i]).Abs() > time.Millisecond {
			t.Errorf("decoded frame %d at %v, want %v", i, f.PTS, pts[i])
		}
	}
}

// TestFileSinkClosedEarly stops after 3 frames, as an interrupted run does:
// Close still leaves a complete file with all 3.
func TestFileSinkClosedEarly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "early.mp4")
	s, err := NewFileSink(path, EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	writeFrames(t, s, 64, 48, []time.Duration{0, 33 * time.Millisecond, 66 * time.Millisecond})
	noFile(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.WriteFrame(64, 48, mediatest.Pattern(64, 48, 3), time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v, want ErrClosed", err)
	}
	if n := mediatest.Probe(t, path).Frames(t); n != 3 {
		t.Fatalf("%d frames in the file, want 3", n)
	}
}

// TestFileSinkSIGINT interrupts a recording process for real: its SIGINT
// handler calls Close while the main loop is writing, and every frame the
// loop wrote is in the playable file.
func TestFileSinkSIGINT(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sigint.mp4")
	cmd := helperCmd(t, "mp4-sigint", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not get ready: %q %s", sc.Text(), stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var n int
	if !sc.Scan() {
		t.Fatalf("helper said nothing after SIGINT: %s", stderr.String())
	}
	if _, err := fmt.Sscanf(sc.Text(), "frames %d", &n); err != nil {
		t.Fatalf("helper: %q: %v", sc.Text(), err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	if got := mediatest.Probe(t, path).Frames(t); got != n || n < 3 {
		t.Fatalf("%d frames in the file, the process wrote %d (want >= 3)", got, n)
	}
	noFile(t, path+".partial")
}

// TestFileSinkOddSize: x264 codes 4:2:0 in even sizes only, so 33x17 is
// recorded as 34x18 with the last column and row repeated.
func TestFileSinkOddSize(t *testing.T) {
	const w, h = 33, 17
	path := filepath.Join(t.TempDir(), "odd.mp4")
	s, err := NewFileSink(path, EncoderConfig{CRF: 12})
	if err != nil {
		t.Fatal(err)
	}
	pics := writeFrames(t, s, w, h, []time.Duration{0, 40 * time.Millisecond, 80 * time.Millisecond})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := mediatest.Probe(t, path).Streams[0]; st.Width != w+1 || st.Height != h+1 {
		t.Fatalf("file is %dx%d, want %dx%d", st.Width, st.Height, w+1, h+1)
	}
	frames := mediatest.DecodeFile(t, path)
	if len(frames) != 3 {
		t.Fatalf("decoded %d frames, want 3", len(frames))
	}
	for i, f := range frames {
		if p := mediatest.PSNR(pics[i], w, h, f.RGB, f.Width); p < 30 {
			t.Errorf("frame %d: PSNR %.1f dB over the 33x17 picture, want > 30", i, p)
		}
		// The padding repeats the edge: column 33 is like column 32, row 17
		// like row 16.
		var d, cnt float64
		for y := 0; y < h; y++ {
			for c := 0; c < 3; c++ {
				d += absf(float64(f.RGB[(y*f.Width+w)*3+c]) - float64(f.RGB[(y*f.Width+w-1)*3+c]))
				cnt++
			}
		}
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				d += absf(float64(f.RGB[(h*f.Width+x)*3+c]) - float64(f.RGB[((h-1)*f.Width+x)*3+c]))
				cnt++
			}
		}
		if d/cnt > 6 {
			t.Errorf("frame %d: padding differs from the edge by %.1f levels on average", i, d/cnt)
		}
	}
}

func absf(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func TestFileSinkBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.mp4")
	s, err := NewFileSink(empty, EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrNoFrames) {
		t.Errorf("close without frames: %v, want ErrNoFrames", err)
	}
	noFile(t, empty)
	noFile(t, empty+".partial")

	if _, err := NewFileSink(filepath.Join(dir, "x.mp4"), EncoderConfig{Preset: "warp"}); err == nil {
		t.Error("unknown preset: no error")
	}

	path := filepath.Join(dir, "sizes.mp4")
	if s, err = NewFileSink(path, EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFrame(64, 48, mediatest.Pattern(64, 48, 0), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteFrame(64, 48, make([]byte, 10), time.Millisecond); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("short frame: %v (want an error naming the file)", err)
	}
	// A size change is no error: the picture is fitted into the track's
	// size (TestFileSinkMixedSizes).
	if err := s.WriteFrame(32, 32, mediatest.Pattern(32, 32, 1), 40*time.Millisecond); err != nil {
		t.Errorf("size change: %v", err)
	}
	if err := s.WriteFrame(64, 48, mediatest.Pattern(64, 48, 2), 80*time.Millisecond); err != nil {
		t.Fatalf("a good frame after bad ones: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := mediatest.Probe(t, path).Frames(t); n != 3 {
		t.Fatalf("%d frames, want the 3 good ones", n)
	}
}

// OnWritten names every frame once, in order, when its packet reaches the
// muxer: some frames after WriteFrame (x264's lookahead), the rest at
// Close. It gives back the pts as given, not as the track's 90 kHz ticks
// would round it: a USB camera's clock counts microseconds, and a caller
// that keys its frames by pts (a recording's latency) would otherwise
// never find a quarter of them again.
func TestFileSinkOnWritten(t *testing.T) {
	const w, h, n = 96, 64, 40
	path := filepath.Join(t.TempDir(), "written.mp4")
	s, err := NewFileSink(path, EncoderConfig{FrameRate: 25})
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Duration
	s.OnWritten(func(pts time.Duration) { got = append(got, pts) })
	pts := make([]time.Duration, n)
	held := 0
	for i := range pts {
		pts[i] = time.Duration(i) * 33367 * time.Microsecond // 29.97 fps on a microsecond clock
		if err := s.WriteFrame(w, h, mediatest.Pattern(w, h, i), pts[i]); err != nil {
			t.Fatal(err)
		}
		held = max(held, i+1-len(got))
	}
	atClose := n - len(got)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(pts) {
		t.Fatalf("written %v, want %v", got, pts)
	}
	if held < 2 || atClose < 1 {
		t.Fatalf("the encoder held at most %d frames, %d at Close: no lookahead?", held, atClose)
	}
	t.Logf("x264 held up to %d frames; %d came out at Close", held, atClose)
}
