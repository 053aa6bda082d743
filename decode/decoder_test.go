package decode

import (
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// makeVideo renders a clip with the ffmpeg CLI from a lavfi source.
func makeVideo(t *testing.T, name, source string, args ...string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	cmd := append([]string{"-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source}, args...)
	cmd = append(cmd, "-y", out)
	if b, err := exec.Command("ffmpeg", cmd...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", cmd, err, b)
	}
	return out
}

func decodeAll(t *testing.T, path string) ([]*Frame, error) {
	t.Helper()
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var frames []*Frame
	for {
		f, err := d.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return frames, nil
			}
			return frames, err
		}
		frames = append(frames, f)
	}
}

func TestDecodeH264ToRGB(t *testing.T) {
	path := makeVideo(t, "red.mp4", "color=c=0xE01010:s=64x48:r=10:d=1",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5")
	frames, err := decodeAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 10 {
		t.Fatalf("decoded %d frames, want 10", len(frames))
	}
	for i, f := range frames {
		if f.Width != 64 || f.Height != 48 || len(f.RGB) != 64*48*3 {
			t.Fatalf("frame %d: %dx%d with %d bytes", i, f.Width, f.Height, len(f.RGB))
		}
		if f.Seq != int64(i) {
			t.Errorf("frame %d has seq %d", i, f.Seq)
		}
		if want := time.Duration(i) * 100 * time.Millisecond; absDur(f.PTS-want) > time.Millisecond {
			t.Errorf("frame %d pts %v, want %v", i, f.PTS, want)
		}
		if f.StreamID != path {
			t.Errorf("stream id %q", f.StreamID)
		}
		// YUV 4:2:0 round trip of a flat colour: within a few levels.
		px := f.RGB[(24*64+32)*3:]
		if !near(px[0], 0xE0, 6) || !near(px[1], 0x10, 6) || !near(px[2], 0x10, 6) {
			t.Errorf("frame %d centre pixel %v, want about [224 16 16]", i, px[:3])
		}
	}
}

func TestDecodeOddSizeMJPEG(t *testing.T) {
	path := makeVideo(t, "odd.avi", "testsrc2=s=64x48:r=5:d=1",
		"-vf", "scale=33:17", "-pix_fmt", "yuvj444p", "-c:v", "mjpeg", "-q:v", "3")
	frames, err := decodeAll(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 5 || frames[0].Width != 33 || frames[0].Height != 17 {
		t.Fatalf("decoded %d frames of %dx%d, want 5 of 33x17", len(frames), frames[0].Width, frames[0].Height)
	}
}

func TestOpenErrorsNameTheInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.mp4")
	if _, err := Open(missing, Options{}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: got %v", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.mp4")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a video ", 500)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage, Options{}); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("garbage file: got %v", err)
	}
	if _, err := Open(missing, Options{Format: "no-such-format"}); err == nil || !strings.Contains(err.Error(), "no-such-format") {
		t.Fatalf("unknown format: got %v", err)
	}
}

func TestFFmpegVersionIsTheLoadedLibrary(t *testing.T) {
	v := FFmpegVersion()
	if !strings.HasPrefix(v, "5.1") || !strings.Contains(v, "libavcodec 59.") {
		t.Fatalf("FFmpeg version %q, want 5.1 with libavcodec 59", v)
	}
}

func near(got, want, tol byte) bool {
	if got > want {
		return got-want <= tol
	}
	return want-got <= tol
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestHardwareDecodeFallsBack asks for CUDA and VAAPI on a machine without
// either: decoding goes on in software, every frame arrives.
func TestHardwareDecodeFallsBack(t *testing.T) {
	path := makeVideo(t, "hw.mp4", "testsrc2=s=64x48:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	for _, kind := range []string{"cuda", "vaapi", "quantum"} {
		d, err := Open(path, Options{HWDecode: kind})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		n := 0
		for {
			_, err := d.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("%s: %v", kind, err)
				}
				break
			}
			n++
		}
		if n != 10 {
			t.Errorf("%s: %d frames, want 10", kind, n)
		}
		if got := d.HWDevice(); got != "" {
			t.Errorf("%s: decoder reports hardware %q on a machine without it", kind, got)
		}
		d.Close()
	}
}

func TestFrameCount(t *testing.T) {
	path := makeVideo(t, "count.mp4", "testsrc2=s=64x48:r=10:d=3", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := d.FrameCount(); n != 30 {
		t.Fatalf("frame count %d, want 30", n)
	}
}

// damage overwrites n bytes in the middle of a copy of path with bytes of a
// fixed seed: the same damage every run.
func damage(t *testing.T, path string, n int) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2*n {
		t.Fatalf("%s is %d bytes, too small to damage %d", path, len(b), n)
	}
	junk := rand.New(rand.NewPCG(21, 11))
	for i := len(b)/2 - n/2; i < len(b)/2+n/2; i++ {
		b[i] = byte(junk.Uint32())
	}
	out := filepath.Join(t.TempDir(), "damaged"+filepath.Ext(path))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// Issue 21 D11: 25 KB of junk in an mp4 lost frames without a word. The
// decoder counts the damage it meets; a whole file has none.
func TestDecodeErrorsAreCounted(t *testing.T) {
	whole := makeVideo(t, "whole.mp4", "testsrc2=s=320x240:r=25:d=8", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	count := func(path string) (frames int, errs, declared int64) {
		d, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for {
			if _, err := d.Next(); err != nil {
				break
			}
			frames++
		}
		return frames, d.DecodeErrors(), d.FrameCount()
	}
	if n, errs, _ := count(whole); n != 200 || errs != 0 {
		t.Fatalf("whole file: %d frames, %d decode errors; want 200, 0", n, errs)
	}
	n, errs, declared := count(damage(t, whole, 25000))
	if errs == 0 {
		t.Errorf("damaged file: %d of %d frames and no decode error counted", n, declared)
	}
	t.Logf("damaged file: %d of %d frames, %d decode errors", n, declared, errs)
}
