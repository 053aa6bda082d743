package cascade

import (
	"math/rand"
	"testing"

	"github.com/htcstream/htcstream/infer"
)

// TestAnyFrameSize runs the bundled model on frames of awkward sizes and
// contents: tiny, odd, extreme aspect ratios, large, flat and noisy. Each
// must give a result (possibly empty) with boxes and masks inside the frame,
// never a panic.
func TestAnyFrameSize(t *testing.T) {
	b, err := infer.LoadBundle(testBundle(t), infer.SessionOptions{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	md, err := NewModel(b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := md.WarmUp(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	for _, c := range []struct {
		w, h  int
		noise bool
	}{{1, 1, false}, {7, 5, true}, {33, 17, true}, {2000, 20, true}, {20, 2000, true}, {1920, 1080, false}, {321, 241, true}} {
		pix := make([]byte, c.w*c.h*3)
		if c.noise {
			rng.Read(pix)
		}
		res, _, err := md.Detect([]Image{{Width: c.w, Height: c.h, Pix: pix, Order: infer.RGB}})
		if err != nil {
			t.Fatalf("%dx%d: %v", c.w, c.h, err)
		}
		for _, d := range res[0].Detections {
			if d.Box.X1 < 0 || d.Box.Y1 < 0 || d.Box.X2 > float32(c.w)+0.5 || d.Box.Y2 > float32(c.h)+0.5 {
				t.Errorf("%dx%d: box %+v outside the frame", c.w, c.h, d.Box)
			}
			m := d.Mask
			if m.X < 0 || m.Y < 0 || m.X+m.W > c.w || m.Y+m.H > c.h || len(m.Bits) != m.W*m.H {
				t.Errorf("%dx%d: mask region %d,%d %dx%d outside the frame", c.w, c.h, m.X, m.Y, m.W, m.H)
			}
		}
	}
	if _, _, err := md.Detect([]Image{{Width: 10, Height: 10, Pix: make([]byte, 10)}}); err == nil {
		t.Fatal("a frame with too few pixels must be an error")
	}
	if _, _, err := md.Detect([]Image{{Width: 4, Height: 4, Pix: make([]byte, 48)}, {Width: 5, Height: 4, Pix: make([]byte, 60)}}); err == nil {
		t.Fatal("a batch of mixed sizes must be an error")
	}
}
