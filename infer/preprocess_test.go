package infer

import (
	"math"
	"testing"

	"gocv.io/x/gocv"
)

func TestResizedSizeFollowsMMDetection(t *testing.T) {
	cases := []struct {
		w, h   int
		s      Scale
		rw, rh int
	}{
		{640, 480, Scale{1333, 800}, 1067, 800},   // short side binds: 800/480
		{1920, 1080, Scale{1333, 800}, 1333, 750}, // long side binds: 1333/1920
		{480, 640, Scale{1333, 800}, 800, 1067},   // portrait
		{2, 1, Scale{320, 320}, 320, 160},
		{5000, 3, Scale{100, 100}, 100, 1}, // never below one pixel
	}
	for _, c := range cases {
		if rw, rh := ResizedSize(c.w, c.h, c.s); rw != c.rw || rh != c.rh {
			t.Errorf("%dx%d at %v: got %dx%d, want %dx%d", c.w, c.h, c.s, rw, rh, c.rw, c.rh)
		}
	}
	if w, h := PaddedSize(1067, 800, 32); w != 1088 || h != 800 {
		t.Errorf("padded %dx%d", w, h)
	}
}

// TestPreprocessLayoutFlipAndColour checks a frame whose pixels encode their
// own position: after an identity-size resize every tensor element can be
// predicted exactly, including the mirrored view and BGR input.
func TestPreprocessLayoutFlipAndColour(t *testing.T) {
	const w, h = 8, 4
	rgb := make([]byte, w*h*3)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := (y*w + x) * 3
			rgb[i], rgb[i+1], rgb[i+2] = byte(10*x), byte(50*y), byte(200)
		}
	}
	src, err := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC3, rgb)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bgr := gocv.NewMat()
	defer bgr.Close()
	gocv.CvtColor(src, &bgr, gocv.ColorBGRToRGB)

	n := Normalization{Mean: [3]float32{1, 2, 3}, Std: [3]float32{2, 4, 8}}
	padW, padH := PaddedSize(w, h, 32)
	for _, tc := range []struct {
		name  string
		mat   gocv.Mat
		order PixelOrder
		flip  bool
	}{{"rgb", src, RGB, false}, {"bgr", bgr, BGR, false}, {"rgb-flip", src, RGB, true}} {
		dst := make([]float32, 3*padW*padH)
		for i := range dst {
			dst[i] = 99 // padding must come back as zeros
		}
		p, err := Preprocess(tc.mat, tc.order, View{Scale: Scale{8, 8}, Flip: tc.flip}, n, padW, padH, dst)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if p.Width != w || p.Height != h || p.ScaleX != 1 || p.ScaleY != 1 || p.Flip != tc.flip {
			t.Fatalf("%s: prepared %+v", tc.name, p)
		}
		for y := 0; y < padH; y++ {
			for x := 0; x < padW; x++ {
				for c := 0; c < 3; c++ {
					got := dst[c*padW*padH+y*padW+x]
					want := float32(0)
					if x < w && y < h {
						sx := x
						if tc.flip {
							sx = w - 1 - x
						}
						want = (float32(rgb[(y*w+sx)*3+c]) - n.Mean[c]) / n.Std[c]
					}
					if math.Abs(float64(got-want)) > 1e-5 {
						t.Fatalf("%s: [c%d y%d x%d] = %v, want %v", tc.name, c, y, x, got, want)
					}
				}
			}
		}
	}
}

func TestPreprocessResizesAndRejectsBadInput(t *testing.T) {
	src := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(30, 60, 90, 0), 100, 200, gocv.MatTypeCV8UC3)
	defer src.Close()
	n := Normalization{Std: [3]float32{1, 1, 1}}
	rw, rh := ResizedSize(200, 100, Scale{64, 64})
	padW, padH := PaddedSize(rw, rh, 32)
	dst := make([]float32, 3*padW*padH)
	p, err := Preprocess(src, RGB, View{Scale: Scale{64, 64}}, n, padW, padH, dst)
	if err != nil {
		t.Fatal(err)
	}
	if p.Width != 64 || p.Height != 32 || p.ScaleX != 0.32 || p.ScaleY != 0.32 {
		t.Fatalf("prepared %+v", p)
	}
	if dst[0] != 30 || dst[padW*padH] != 60 || dst[2*padW*padH+31*padW+63] != 90 {
		t.Fatalf("a flat frame must stay flat after resizing: %v %v %v", dst[0], dst[padW*padH], dst[2*padW*padH+31*padW+63])
	}
	if _, err := Preprocess(src, RGB, View{Scale: Scale{64, 64}}, n, 32, 32, make([]float32, 3*32*32)); err == nil {
		t.Fatal("a tensor too small for the view must be an error")
	}
	empty := gocv.NewMat()
	defer empty.Close()
	if _, err := Preprocess(empty, RGB, View{Scale: Scale{64, 64}}, n, padW, padH, dst); err == nil {
		t.Fatal("an empty frame must be an error")
	}
	gray := gocv.NewMatWithSize(4, 4, gocv.MatTypeCV8UC1)
	defer gray.Close()
	if _, err := Preprocess(gray, RGB, View{Scale: Scale{64, 64}}, n, padW, padH, dst); err == nil {
		t.Fatal("a one-channel frame must be an error")
	}
}
