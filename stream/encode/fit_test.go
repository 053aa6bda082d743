package encode

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mediatest"
)

func solid(w, h int, c [3]byte) []byte {
	b := make([]byte, w*h*3)
	for i := 0; i < len(b); i += 3 {
		copy(b[i:], c[:])
	}
	return b
}

func TestFitRGB(t *testing.T) {
	pic := mediatest.Pattern(33, 17, 2)
	if got := fitRGB(pic, 33, 17, 33, 17); !bytes.Equal(got, pic) {
		t.Error("fitting a picture into its own size changed it")
	}
	// 100x40 into 64x48: scaled by 0.64 to 64x26, rows 11..36, black above
	// and below.
	got := fitRGB(solid(100, 40, [3]byte{0, 200, 0}), 100, 40, 64, 48)
	at := func(x, y int) []byte { return got[(y*64+x)*3 : (y*64+x)*3+3] }
	for _, p := range [][2]int{{0, 11}, {63, 11}, {32, 24}, {0, 36}, {63, 36}} {
		if c := at(p[0], p[1]); !bytes.Equal(c, []byte{0, 200, 0}) {
			t.Errorf("(%d,%d) is %v, want the picture's green", p[0], p[1], c)
		}
	}
	for _, p := range [][2]int{{0, 0}, {32, 10}, {32, 37}, {63, 47}} {
		if c := at(p[0], p[1]); !bytes.Equal(c, []byte{0, 0, 0}) {
			t.Errorf("(%d,%d) is %v, want a black bar", p[0], p[1], c)
		}
	}
}

// Pictures of mixed sizes (an image folder) make one recording of the
// first one's size: the others are fitted in, and nothing fails.
func TestFileSinkMixedSizes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.mp4")
	s, err := NewFileSink(path, EncoderConfig{FrameRate: 10, CRF: 12})
	if err != nil {
		t.Fatal(err)
	}
	red, green, blue := [3]byte{220, 0, 0}, [3]byte{0, 220, 0}, [3]byte{0, 0, 220}
	for i, p := range []struct {
		w, h int
		c    [3]byte
	}{{64, 48, red}, {100, 40, green}, {32, 64, blue}} {
		if err := s.WriteFrame(p.w, p.h, solid(p.w, p.h, p.c), time.Duration(i)*100*time.Millisecond); err != nil {
			t.Fatalf("frame %d (%dx%d): %v", i, p.w, p.h, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	frames := mediatest.DecodeFile(t, path)
	if len(frames) != 3 {
		t.Fatalf("decoded %d frames, want 3", len(frames))
	}
	near := func(got []byte, want [3]byte) bool {
		for c := range 3 {
			if d := int(got[c]) - int(want[c]); d < -20 || d > 20 {
				return false
			}
		}
		return true
	}
	px := func(i, x, y int) []byte { f := frames[i]; return f.RGB[(y*f.Width+x)*3:][:3] }
	for i, f := range frames {
		if f.Width != 64 || f.Height != 48 {
			t.Fatalf("frame %d is %dx%d, want the first picture's 64x48", i, f.Width, f.Height)
		}
	}
	if !near(px(0, 32, 24), red) || !near(px(1, 32, 24), green) || !near(px(2, 32, 24), blue) {
		t.Errorf("centres %v %v %v, want red, green, blue", px(0, 32, 24), px(1, 32, 24), px(2, 32, 24))
	}
	// 100x40 is letterboxed (bars above and below), 32x64 pillarboxed.
	if !near(px(1, 32, 2), [3]byte{}) || !near(px(2, 4, 24), [3]byte{}) {
		t.Errorf("bars %v %v, want black", px(1, 32, 2), px(2, 4, 24))
	}
}
