package motion

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// scene is a textured background with camera noise, and optionally a
// bright square: what a still camera sees before and after someone walks in.
func scene(w, h int, seed uint64, square *[4]int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	rgb := make([]byte, w*h*3)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			base := 60 + (x/40+y/40)%2*40 // a checkerboard the size of furniture
			for c := 0; c < 3; c++ {
				rgb[(y*w+x)*3+c] = byte(base + r.IntN(9) - 4)
			}
		}
	}
	if square != nil {
		for y := square[1]; y < square[3]; y++ {
			for x := square[0]; x < square[2]; x++ {
				rgb[(y*w+x)*3], rgb[(y*w+x)*3+1], rgb[(y*w+x)*3+2] = 230, 200, 180
			}
		}
	}
	return rgb
}

func TestStillSceneDoesNotMove(t *testing.T) {
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		res, err := d.Detect(scene(640, 360, uint64(i), nil), 640, 360)
		if err != nil {
			t.Fatal(err)
		}
		if res.Moving {
			t.Fatalf("frame %d: camera noise counted as motion: %+v", i, res)
		}
	}
}

func TestObjectEnteringMoves(t *testing.T) {
	d, _ := New(Config{})
	for i := range 5 {
		if _, err := d.Detect(scene(640, 360, uint64(i), nil), 640, 360); err != nil {
			t.Fatal(err)
		}
	}
	sq := [4]int{400, 100, 480, 260}
	res, err := d.Detect(scene(640, 360, 99, &sq), 640, 360)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Moving || len(res.Regions) != 1 {
		t.Fatalf("a square walking in: %+v", res)
	}
	// The region covers the square, within a grey pixel and the blur.
	r := res.Regions[0]
	const slack = 3 * 360 / 100
	if abs(r[0]-400) > slack || abs(r[1]-100) > slack || abs(r[2]-480) > slack || abs(r[3]-260) > slack {
		t.Fatalf("region %v, square %v", r, sq)
	}
}

func TestMaskHidesMotion(t *testing.T) {
	// the square's whole area is masked: nothing moves
	d, _ := New(Config{Mask: []Polygon{{{0.55, 0.2}, {0.8, 0.2}, {0.8, 0.8}, {0.55, 0.8}}}})
	for i := range 3 {
		d.Detect(scene(640, 360, uint64(i), nil), 640, 360)
	}
	sq := [4]int{400, 100, 480, 260}
	if res, _ := d.Detect(scene(640, 360, 9, &sq), 640, 360); res.Moving {
		t.Fatalf("motion under the mask: %+v", res)
	}
	// the same square elsewhere moves
	sq = [4]int{40, 100, 120, 260}
	if res, _ := d.Detect(scene(640, 360, 10, &sq), 640, 360); !res.Moving {
		t.Fatalf("no motion outside the mask: %+v", res)
	}
}

func TestSmallRegionsAreNoise(t *testing.T) {
	d, _ := New(Config{ContourArea: 50})
	for i := range 3 {
		d.Detect(scene(640, 360, uint64(i), nil), 640, 360)
	}
	sq := [4]int{300, 100, 318, 118} // about 3x3 grey pixels
	if res, _ := d.Detect(scene(640, 360, 9, &sq), 640, 360); res.Moving {
		t.Fatalf("a region under contour_area moved: %+v", res)
	}
}

func TestLightChangeIsNotMotion(t *testing.T) {
	d, _ := New(Config{})
	d.Detect(scene(320, 180, 1, nil), 320, 180)
	bright := scene(320, 180, 2, nil)
	for i := range bright {
		bright[i] = min(255, bright[i]+80)
	}
	res, _ := d.Detect(bright, 320, 180)
	if res.Moving || !res.Lightning {
		t.Fatalf("lights on: %+v", res)
	}
	// the new light is the background now
	bright2 := scene(320, 180, 3, nil)
	for i := range bright2 {
		bright2[i] = min(255, bright2[i]+80)
	}
	if res, _ := d.Detect(bright2, 320, 180); res.Moving || res.Lightning {
		t.Fatalf("after the light change: %+v", res)
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []Config{{FrameHeight: 2}, {Threshold: 300}, {ContourArea: -1}, {Alpha: 2},
		{Mask: []Polygon{{{0, 0}, {1, 0}}}}, {Mask: []Polygon{{{0, 0}, {1.5, 0}, {1, 1}}}}} {
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v", c, err)
		}
	}
	d, _ := New(Config{})
	if _, err := d.Detect(make([]byte, 10), 640, 360); err == nil {
		t.Fatal("a short buffer was measured")
	}
}

func abs(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// BenchmarkDetect1080p is the motion detector's cost per frame at 1080p
// with an object moving about.
func BenchmarkDetect1080p(b *testing.B) {
	d, _ := New(Config{})
	frames := [][]byte{scene(1920, 1080, 1, &[4]int{200, 200, 500, 900}), scene(1920, 1080, 2, &[4]int{260, 200, 560, 900})}
	b.SetBytes(1920 * 1080 * 3)
	b.ResetTimer()
	for i := range b.N {
		if _, err := d.Detect(frames[i%2], 1920, 1080); err != nil {
			b.Fatal(err)
		}
	}
}
