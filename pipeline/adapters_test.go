package pipeline

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/ingest"
)

// A looped file continues its numbering and its clock across every pass,
// one frame interval between the last frame of a pass and the first of the
// next, from the third pass on as on the second.
func TestIngestSourceLoopKeepsTheClock(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=0.5",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", clip)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	src, err := ingest.Parse(clip)
	if err != nil {
		t.Fatal(err)
	}
	s := &IngestSource{ID: "clip", Source: src, Config: ingest.Config{Loop: true}}
	var frames []*decode.Frame
	err = s.Run(context.Background(), func(f *decode.Frame) bool {
		frames = append(frames, f)
		return len(frames) < 15 // three passes of five frames
	})
	if err != nil || len(frames) != 15 {
		t.Fatalf("Run: %v after %d frames", err, len(frames))
	}
	for i, f := range frames {
		want := time.Duration(i) * 100 * time.Millisecond
		if f.Seq != int64(i) || (f.PTS-want).Abs() > time.Millisecond {
			t.Errorf("frame %d: seq %d pts %v, want seq %d pts %v", i, f.Seq, f.PTS, i, want)
		}
	}
}

// The HUD's rate of a 25 fps camera whose frames come in pairs (a loaded
// machine bunches them) is 25 fps, not the mean of 1/0.1 ms and 1/80 ms.
func TestHUDRateOfBunchedFrames(t *testing.T) {
	d := &OverlayDrawer{}
	at := time.Unix(0, 0)
	var fps float64
	for i := 0; i < 200; i++ {
		gap := 100 * time.Microsecond
		if i%2 == 0 {
			gap = 80*time.Millisecond - gap
		}
		at = at.Add(gap)
		fps = d.rate("cam", at)
	}
	if fps < 23 || fps > 27 {
		t.Fatalf("HUD rate %.1f fps for a 25 fps camera", fps)
	}
}
