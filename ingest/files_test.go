package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// ffmpegMake renders a file with the ffmpeg CLI from a lavfi graph.
func ffmpegMake(t testing.TB, out, graph string, args ...string) string {
	t.Helper()
	if !filepath.IsAbs(out) {
		out = filepath.Join(t.TempDir(), out)
	}
	cmd := append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", graph}, args...)
	cmd = append(cmd, "-y", out)
	if b, err := exec.Command("ffmpeg", cmd...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", cmd, err, b)
	}
	return out
}

// runAll runs src to its end and returns every frame and Run's error.
func runAll(t *testing.T, src Source, cfg Config) ([]*decode.Frame, error, *running) {
	t.Helper()
	x := startRunner(t, src, cfg)
	err := x.wait(t, 30*time.Second)
	return x.drain(), err, x
}

func TestFilesOfEachCodec(t *testing.T) {
	checkNoLeaks(t)
	src := "testsrc2=s=64x48:r=10:d=1"
	cases := []struct {
		name string
		w, h int
		args []string
	}{
		{"h264.mp4", 64, 48, []string{"-c:v", "libx264", "-pix_fmt", "yuv420p"}},
		{"hevc.mkv", 64, 48, []string{"-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p"}},
		{"vp9.webm", 65, 47, []string{"-vf", "scale=65:47", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p"}},
		{"mjpeg.avi", 33, 17, []string{"-vf", "scale=33:17", "-c:v", "mjpeg", "-pix_fmt", "yuvj444p", "-q:v", "3"}},
		{"odd444.mp4", 63, 45, []string{"-vf", "scale=63:45", "-c:v", "libx264", "-pix_fmt", "yuv444p"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := ffmpegMake(t, c.name, src, c.args...)
			s, err := Parse(path)
			if err != nil {
				t.Fatal(err)
			}
			frames, err, x := runAll(t, s, Config{})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if len(frames) != 10 {
				t.Fatalf("%d frames, want 10", len(frames))
			}
			checkSeqAndPTS(t, frames, 0)
			for i, f := range frames {
				if f.Width != c.w || f.Height != c.h || len(f.RGB) != c.w*c.h*3 {
					t.Fatalf("frame %d: %dx%d with %d bytes, want %dx%d", i, f.Width, f.Height, len(f.RGB), c.w, c.h)
				}
				if want := time.Duration(i) * 100 * time.Millisecond; (f.PTS - want).Abs() > time.Millisecond {
					t.Errorf("frame %d pts %v, want %v", i, f.PTS, want)
				}
			}
			if got := states(x.allEvents()); strings.Join(got, ",") != "connecting,live,ended" {
				t.Errorf("states %v, want connecting, live, ended", got)
			}
			if x.r.State() != StateEnded {
				t.Errorf("state %s", x.r.State())
			}
		})
	}
}

// A clip whose rate changes half way (10 fps, then 25 fps) keeps its own
// timestamps: the runner must neither resample nor renumber time.
func TestVariableFrameRateKeepsPTS(t *testing.T) {
	checkNoLeaks(t)
	graph := "testsrc2=s=64x48:r=10:d=1[a];testsrc2=s=64x48:r=25:d=1[b];[a][b]concat=n=2:v=1:a=0[out0]"
	path := ffmpegMake(t, "vfr.mkv", graph, "-fps_mode", "passthrough", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts_time", "-of", "csv=p=0", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var want []time.Duration
	for _, line := range strings.Fields(string(out)) {
		sec, err := strconv.ParseFloat(strings.Trim(line, ","), 64)
		if err != nil {
			t.Fatalf("ffprobe line %q: %v", line, err)
		}
		want = append(want, time.Duration(sec*float64(time.Second)))
	}
	frames, err, _ := runAll(t, Source{Kind: File, Location: path}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 35 || len(want) != 35 {
		t.Fatalf("%d frames, ffprobe %d; want 35", len(frames), len(want))
	}
	checkSeqAndPTS(t, frames, 0)
	for i, f := range frames {
		if (f.PTS - (want[i] - want[0])).Abs() > time.Millisecond {
			t.Fatalf("frame %d pts %v, ffprobe says %v", i, f.PTS, want[i]-want[0])
		}
	}
	if d := frames[5].PTS - frames[4].PTS; d != 100*time.Millisecond {
		t.Errorf("10 fps part: step %v", d)
	}
	if d := frames[30].PTS - frames[29].PTS; d != 40*time.Millisecond {
		t.Errorf("25 fps part: step %v", d)
	}
}

func TestDamagedFiles(t *testing.T) {
	checkNoLeaks(t)
	t.Run("truncated", func(t *testing.T) {
		for _, name := range []string{"cut.mkv", "cut.mp4"} {
			args := []string{"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5"}
			if strings.HasSuffix(name, ".mp4") {
				// The index first, as a streaming writer would put it, so
				// the first half alone can be opened.
				args = append(args, "-movflags", "+faststart")
			}
			whole := ffmpegMake(t, name, "testsrc2=s=64x48:r=10:d=4", args...)
			data, err := os.ReadFile(whole)
			if err != nil {
				t.Fatal(err)
			}
			cut := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(cut, data[:len(data)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			frames, err, x := runAll(t, Source{Kind: File, Location: cut}, Config{})
			if !errors.Is(err, decode.ErrTruncated) || !strings.Contains(err.Error(), cut) {
				t.Fatalf("%s: Run: %v, want ErrTruncated naming the file", name, err)
			}
			// Every frame FFmpeg can make of the first half arrived.
			direct := decodeCount(t, cut)
			if len(frames) == 0 || len(frames) != direct {
				t.Fatalf("%s: %d frames delivered, the decoder makes %d", name, len(frames), direct)
			}
			checkSeqAndPTS(t, frames, 0)
			if x.r.State() != StateFailed {
				t.Errorf("%s: state %s, want failed", name, x.r.State())
			}
			t.Logf("%s: %d frames, then %v", name, len(frames), err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "garbage.mp4")
		if err := os.WriteFile(path, []byte(strings.Repeat("this is not a video\n", 300)), 0o644); err != nil {
			t.Fatal(err)
		}
		frames, err, x := runAll(t, Source{Kind: File, Location: path}, Config{})
		if err == nil || !strings.Contains(err.Error(), path) || len(frames) != 0 {
			t.Fatalf("Run: %d frames, %v; want an error naming %s", len(frames), err, path)
		}
		if got := states(x.allEvents()); strings.Join(got, ",") != "connecting,failed" {
			t.Errorf("states %v", got)
		}
	})
	t.Run("missing camera", func(t *testing.T) {
		src := Source{Kind: Camera, Location: "/dev/video97", Format: "v4l2"}
		frames, err, x := runAll(t, src, Config{})
		if err == nil || !strings.Contains(err.Error(), "camera /dev/video97 does not exist") || len(frames) != 0 {
			t.Fatalf("Run: %v", err)
		}
		if x.r.State() != StateFailed {
			t.Errorf("state %s", x.r.State())
		}
	})
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gone.mp4")
		_, err, _ := runAll(t, Source{Kind: File, Location: path}, Config{})
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("Run: %v", err)
		}
	})
}

func decodeCount(t *testing.T, path string) int {
	t.Helper()
	d, err := decode.Open(path, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n := 0
	for {
		if _, err := d.Next(); err != nil {
			return n
		}
		n++
	}
}

func TestImageFolder(t *testing.T) {
	checkNoLeaks(t)
	dir := t.TempDir()
	// Natural order: frame2 before frame10, whatever the extension.
	pics := []struct {
		name, colour string
		w, h         int
		rgb          [3]byte
	}{
		{"frame1.png", "red", 64, 48, [3]byte{255, 0, 0}},
		{"frame2.jpg", "lime", 32, 24, [3]byte{0, 255, 0}},
		{"frame10.PNG", "blue", 50, 30, [3]byte{0, 0, 255}},
	}
	for _, p := range pics {
		ffmpegMake(t, filepath.Join(dir, p.name), fmt.Sprintf("color=c=%s:s=%dx%d", p.colour, p.w, p.h),
			"-frames:v", "1", "-update", "1", "-q:v", "2", "-f", "image2")
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a picture"), 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := Parse(dir)
	if err != nil {
		t.Fatal(err)
	}
	frames, err, _ := runAll(t, src, Config{FrameRate: "10"})
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != len(pics) {
		t.Fatalf("%d frames, want %d", len(frames), len(pics))
	}
	checkSeqAndPTS(t, frames, 0)
	for i, f := range frames {
		p := pics[i]
		if f.Width != p.w || f.Height != p.h {
			t.Errorf("frame %d: %dx%d, want %s's %dx%d", i, f.Width, f.Height, p.name, p.w, p.h)
			continue
		}
		px := f.RGB[((p.h/2)*p.w+p.w/2)*3:]
		for c := 0; c < 3; c++ {
			if d := int(px[c]) - int(p.rgb[c]); d < -12 || d > 12 {
				t.Errorf("frame %d centre %v, want %s %v", i, px[:3], p.name, p.rgb)
				break
			}
		}
		if want := time.Duration(i) * 100 * time.Millisecond; f.PTS != want {
			t.Errorf("frame %d pts %v, want %v", i, f.PTS, want)
		}
		if f.StreamID != dir {
			t.Errorf("frame %d stream id %q, want the folder %q", i, f.StreamID, dir)
		}
		if f.Name != p.name {
			t.Errorf("frame %d name %q, want %q", i, f.Name, p.name)
		}
		if f.Captured.IsZero() {
			t.Errorf("frame %d has no capture time", i)
		}
	}

	// A broken picture is skipped with a warning naming it; the pictures
	// after it still come, the clock without a gap.
	bad := filepath.Join(dir, "frame3.png")
	if err := os.WriteFile(bad, []byte("\x89PNG\r\n\x1a\n broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	frames, err, x := runAll(t, src, Config{})
	if err != nil || len(frames) != len(pics) {
		t.Fatalf("%d frames, %v; want all %d good pictures and no error", len(frames), err, len(pics))
	}
	checkSeqAndPTS(t, frames, 0)
	for i, f := range frames {
		if f.Name != pics[i].name {
			t.Errorf("frame %d is %q, want %q", i, f.Name, pics[i].name)
		}
	}
	if x.r.Skipped() != 1 || x.r.State() != StateEnded {
		t.Errorf("skipped %d, state %s; want 1 and ended", x.r.Skipped(), x.r.State())
	}
	if logs := x.logs.String(); !strings.Contains(logs, "level=WARN msg=\"image skipped\"") || !strings.Contains(logs, "file=frame3.png") {
		t.Errorf("no warning naming frame3.png:\n%s", logs)
	}

	// Only a folder with no readable picture at all is an error.
	broken := t.TempDir()
	for _, n := range []string{"a.png", "b.jpg"} {
		if err := os.WriteFile(filepath.Join(broken, n), []byte("not a picture"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err, x = runAll(t, Source{Kind: Images, Location: broken}, Config{})
	if err == nil || !strings.Contains(err.Error(), broken) || !strings.Contains(err.Error(), "none of its 2 pictures") {
		t.Fatalf("unreadable folder: %v", err)
	}
	if x.r.Skipped() != 2 || x.r.State() != StateFailed {
		t.Errorf("skipped %d, state %s; want 2 and failed", x.r.Skipped(), x.r.State())
	}

	empty := t.TempDir()
	_, err, _ = runAll(t, Source{Kind: Images, Location: empty}, Config{})
	if err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "no .png") {
		t.Fatalf("empty folder: %v", err)
	}
}

func TestRunnerContract(t *testing.T) {
	checkNoLeaks(t)
	path := ffmpegMake(t, "c.mp4", "testsrc2=s=64x48:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	src := Source{Kind: File, Location: path}

	quiet := Config{Logger: slog.New(slog.DiscardHandler)}
	r, err := NewRunner(src, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if r.State() != StateIdle {
		t.Errorf("new runner in state %s", r.State())
	}
	if err := r.Run(context.Background(), nil); err == nil {
		t.Error("Run with no consumer succeeded")
	}

	// The consumer's error stops Run and comes back as is.
	stopHere := errors.New("consumer full")
	n := 0
	err = r.Run(context.Background(), func(*decode.Frame) error {
		n++
		if n == 3 {
			return stopHere
		}
		return nil
	})
	if !errors.Is(err, stopHere) || n != 3 {
		t.Errorf("Run: %v after %d frames, want the consumer's error after 3", err, n)
	}
	if r.State() != StateEnded {
		t.Errorf("state %s after the consumer stopped", r.State())
	}
	if err := r.Run(context.Background(), func(*decode.Frame) error { return nil }); err == nil || !strings.Contains(err.Error(), "runs once") {
		t.Errorf("second Run: %v", err)
	}

	// A context cancelled before Run ends it at once.
	r2, _ := NewRunner(src, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r2.Run(ctx, func(*decode.Frame) error { return nil }); !isCanceled(err) {
		t.Errorf("Run on a cancelled context: %v", err)
	}

	if _, err := NewRunner(Source{Kind: "tape", Location: "x"}, Config{}); !errors.Is(err, ErrBadURL) {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := NewRunner(Source{Kind: File}, Config{}); !errors.Is(err, ErrBadURL) {
		t.Errorf("no location: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	bad := Config{Transport: "sctp", ReadTimeout: -1, MinBackoff: 2 * time.Second, MaxBackoff: time.Second,
		Jitter: 1.5, MaxAttempts: -2, FrameRate: "fast"}
	err := bad.Validate()
	for _, says := range []string{`transport "sctp"`, "read timeout", "min backoff 2s is above max backoff 1s", "jitter 1.5", "max attempts -2", `frame rate "fast"`} {
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("Validate: %v; want it to say %q", err, says)
		}
	}
	if _, err := NewRunner(Source{Kind: RTSP, Location: "rtsp://u:pw@h/x"}, bad); err == nil || strings.Contains(err.Error(), "pw@") {
		t.Errorf("NewRunner with a bad config: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	r, err := NewRunner(Source{Kind: RTSP, Location: "rtsp://h/x"}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{500, 1000, 2000, 4000, 8000, 10000, 10000, 10000}
	for i, w := range want {
		if got := r.backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("backoff after %d failures: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	if got := r.backoff(1 << 20); got != 10*time.Second {
		t.Errorf("backoff after many failures: %v", got)
	}
	j, _ := NewRunner(Source{Kind: RTSP, Location: "rtsp://h/x"}, Config{Jitter: 0.5, MaxBackoff: 4 * time.Second})
	for i := 0; i < 100; i++ {
		if got := j.backoff(4); got < 2*time.Second || got > 4*time.Second {
			t.Fatalf("jittered backoff %v outside [2s, 4s]", got)
		}
	}
}

func TestTimelineAcrossSessions(t *testing.T) {
	ms := time.Millisecond
	tl := &timeline{step: defaultStep, id: "cam"}
	var got []time.Duration
	feed := func(pts ...time.Duration) {
		tl.newSession()
		for _, p := range pts {
			f := &decode.Frame{PTS: p}
			tl.stamp(f)
			if f.Seq != int64(len(got)) || f.StreamID != "cam" {
				t.Fatalf("seq %d stream %q, want %d and cam", f.Seq, f.StreamID, len(got))
			}
			got = append(got, f.PTS)
		}
	}
	feed(0, 50*ms, 100*ms)
	// The next session restarts its clock near zero, then jumps back.
	feed(7*ms, 57*ms, 30*ms, 130*ms)
	// A third repeats a timestamp (a damaged file): never the same PTS twice.
	feed(0, 0, 50*ms)
	want := []time.Duration{0, 50 * ms, 100 * ms, 150 * ms, 200 * ms, 250 * ms, 350 * ms, 450 * ms, 550 * ms, 600 * ms}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pts %v, want %v", got, want)
		}
	}
}

// A looped file or folder starts again at its end with the clock going on:
// Seq continues and the next pass's first frame comes one frame interval
// after the last, so consumers see one long stream. The source goes live
// once, not once a pass.
func TestLoopContinuesTheClock(t *testing.T) {
	ms := time.Millisecond
	clip := ffmpegMake(t, "loop.mp4", "testsrc2=s=64x48:r=10:d=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	dir := t.TempDir()
	for _, n := range []string{"a.png", "b.png"} {
		ffmpegMake(t, filepath.Join(dir, n), "color=c=red:s=32x24", "-frames:v", "1", "-update", "1", "-f", "image2")
	}
	for _, tc := range []struct {
		name     string
		src      Source
		perPass  int
		interval time.Duration
	}{
		{"file", Source{Kind: File, Location: clip}, 5, 100 * ms},
		{"folder", Source{Kind: Images, Location: dir}, 2, 100 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			x := startRunner(t, tc.src, Config{Loop: true, FrameRate: "10", StreamID: "looped"})
			frames := x.collect(t, 3*tc.perPass+1, 20*time.Second)
			checkSeqAndPTS(t, frames, 0)
			for i, f := range frames {
				if want := time.Duration(i) * tc.interval; f.PTS != want {
					t.Fatalf("frame %d (pass %d) pts %v, want %v", i, i/tc.perPass+1, f.PTS, want)
				}
				if f.StreamID != "looped" {
					t.Fatalf("frame %d stream %q", i, f.StreamID)
				}
			}
			if err := x.stop(t); !isCanceled(err) {
				t.Errorf("Run after cancel: %v", err)
			}
			if got := strings.Join(states(x.allEvents()), ","); got != "connecting,live,ended" {
				t.Errorf("states %s, want connecting,live,ended", got)
			}
		})
	}
}

func TestNaturalOrder(t *testing.T) {
	names := []string{"img10.png", "img2.png", "img1.png", "a.png", "img02b.png", "img002.png", "IMG3.png"}
	want := []string{"IMG3.png", "a.png", "img1.png", "img002.png", "img2.png", "img02b.png", "img10.png"}
	for i := range names {
		for j := range names {
			a, b := indexOf(want, names[i]), indexOf(want, names[j])
			if c := naturalCompare(names[i], names[j]); (c < 0) != (a < b) {
				t.Errorf("naturalCompare(%q, %q) = %d", names[i], names[j], c)
			}
		}
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
