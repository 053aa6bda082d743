package overlay

import (
	"bytes"
	"fmt"
	"image"
	"math/rand"
	"testing"

	"github.com/htcstream/htcstream/detection"
)

// refBlendMask is the straightforward per-pixel blend that blendMask must
// match byte for byte: a lookup table per channel and a 4-neighbour test for
// every set pixel.
func refBlendMask(frame []byte, w, top, bottom int, in *detection.Detection, c [3]uint8, a uint32, contour bool) {
	x0, y0 := max(in.Mask.X, 0), max(in.Mask.Y, top)
	x1, y1 := min(in.Mask.X+in.Mask.W, w), min(in.Mask.Y+in.Mask.H, bottom)
	if x1 <= x0 || y1 <= y0 {
		return
	}
	var lut [3][256]byte
	for ch := 0; ch < 3; ch++ {
		for v := 0; v < 256; v++ {
			lut[ch][v] = byte((uint32(v)*(256-a) + uint32(c[ch])*a) >> 8)
		}
	}
	mw, mh := in.Mask.W, in.Mask.H
	edge := func(x, y int) bool {
		if x == 0 || y == 0 || x == mw-1 || y == mh-1 {
			return true
		}
		i := y*mw + x
		return in.Mask.Bits[i-1] == 0 || in.Mask.Bits[i+1] == 0 || in.Mask.Bits[i-mw] == 0 || in.Mask.Bits[i+mw] == 0
	}
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			mx, my := x-in.Mask.X, y-in.Mask.Y
			if in.Mask.Bits[my*mw+mx] == 0 {
				continue
			}
			p := frame[(y*w+x)*3 : (y*w+x)*3+3]
			if contour && edge(mx, my) {
				copy(p, c[:])
				continue
			}
			for ch := range p {
				p[ch] = lut[ch][p[ch]]
			}
		}
	}
}

// randomMask makes a mask of one of several shapes: noise, an ellipse,
// solid, stripes; set bytes are not always 1.
func randomMask(rng *rand.Rand, mw, mh int) []byte {
	m := make([]byte, mw*mh)
	set := func() byte {
		if rng.Intn(2) == 0 {
			return 1
		}
		return byte(1 + rng.Intn(255))
	}
	kind := rng.Intn(5)
	density := rng.Float64()
	for y := 0; y < mh; y++ {
		for x := 0; x < mw; x++ {
			var on bool
			switch kind {
			case 0:
				on = rng.Float64() < density
			case 1:
				dx, dy := (float64(x)+0.5)/float64(mw)-0.5, (float64(y)+0.5)/float64(mh)-0.5
				on = dx*dx+dy*dy <= 0.25
			case 2:
				on = true
			case 3:
				on = (x/(1+y%5))%2 == 0
			case 4: // an ellipse with holes
				dx, dy := (float64(x)+0.5)/float64(mw)-0.5, (float64(y)+0.5)/float64(mh)-0.5
				on = dx*dx+dy*dy <= 0.3 && rng.Float64() < 0.97
			}
			if on {
				m[y*mw+x] = set()
			}
		}
	}
	return m
}

func randomFrame(rng *rand.Rand, w, h int) []byte {
	f := make([]byte, w*h*3)
	rng.Read(f)
	return f
}

// TestBlendMaskMatchesReference draws random masks, many touching or
// crossing the frame's and their region's borders, split into bands at
// random rows, and wants exactly the reference's frame.
func TestBlendMaskMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for iter := 0; iter < 3000; iter++ {
		w, h := 1+rng.Intn(70), 1+rng.Intn(50)
		mw, mh := 1+rng.Intn(80), 1+rng.Intn(60)
		in := detection.Detection{Mask: detection.Mask{X: rng.Intn(w+mw) - mw, Y: rng.Intn(h+mh) - mh, W: mw, H: mh}}
		if rng.Intn(4) == 0 { // flush with the frame's top-left corner
			in.Mask.X, in.Mask.Y = 0, 0
		}
		in.Mask.Bits = randomMask(rng, mw, mh)
		c := [3]uint8{uint8(rng.Intn(256)), uint8(rng.Intn(256)), uint8(rng.Intn(256))}
		a := []uint32{0, 1, 128, 255, 256, uint32(rng.Intn(257))}[rng.Intn(6)]
		contour := rng.Intn(4) != 0
		split := rng.Intn(h + 1)

		want := randomFrame(rng, w, h)
		got := bytes.Clone(want)
		refBlendMask(want, w, 0, h, &in, c, a, contour)
		blendMask(got, w, 0, split, &in, c, a, contour)
		blendMask(got, w, split, h, &in, c, a, contour)
		if !bytes.Equal(got, want) {
			t.Fatalf("iteration %d: %dx%d frame, %dx%d mask at (%d,%d), alpha %d, contour %v, split at %d: %s",
				iter, w, h, mw, mh, in.Mask.X, in.Mask.Y, a, contour, split, firstDiff(got, want, w))
		}
	}
}

// TestDrawMasksMatchesReference draws the benchmark's 100 instances through
// Draw, in as many bands as it likes, and wants the frame a sequential
// reference draw gives.
func TestDrawMasksMatchesReference(t *testing.T) {
	const w, h = 1920, 1080
	ins := instances100(w, h)
	rng := rand.New(rand.NewSource(3))
	for i := range ins[:30] { // some noisier masks, some hanging off the frame
		in := &ins[i]
		in.Mask.Bits = randomMask(rng, in.Mask.W, in.Mask.H)
		if i%3 == 0 {
			in.Mask.X -= in.Mask.X + in.Mask.W/2
		}
	}
	for _, style := range []Style{
		{Alpha: 0.5, ColorBy: ByClass, Contour: true},
		{Alpha: 0.3, ColorBy: ByInstance},
	} {
		r := NewRenderer(style, nil)
		want := randomFrame(rng, w, h)
		got := bytes.Clone(want)
		a := uint32(clamp01(style.Alpha)*256 + 0.5)
		for i := range ins {
			refBlendMask(want, w, 0, h, &ins[i], r.color(&ins[i], i), a, style.Contour)
		}
		if err := r.Draw(got, w, h, ins, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("style %+v: %s", style, firstDiff(got, want, w))
		}
	}
}

func firstDiff(got, want []byte, w int) string {
	for i := range got {
		if got[i] != want[i] {
			p := i / 3
			return fmt.Sprintf("first difference at pixel (%d,%d): got %v, want %v", p%w, p/w, got[3*p:3*p+3], want[3*p:3*p+3])
		}
	}
	return "no difference"
}

func TestTintMatchesFormula(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	for iter := 0; iter < 2000; iter++ {
		c := [3]uint8{uint8(rng.Intn(256)), uint8(rng.Intn(256)), uint8(rng.Intn(256))}
		a := uint32(rng.Intn(257))
		n := rng.Intn(40)
		p := make([]byte, 3*n)
		rng.Read(p)
		want := bytes.Clone(p)
		for i := range want {
			want[i] = byte((uint32(want[i])*(256-a) + uint32(c[i%3])*a) >> 8)
		}
		tt := newTint(c, a)
		tt.blend(p)
		if !bytes.Equal(p, want) {
			t.Fatalf("colour %v alpha %d, %d pixels: got %v, want %v", c, a, n, p, want)
		}
	}
}

func TestFillRect(t *testing.T) {
	const w, h = 40, 30
	rng := rand.New(rand.NewSource(17))
	for iter := range 2000 {
		r := image.Rect(rng.Intn(w+20)-10, rng.Intn(h+20)-10, rng.Intn(w+20)-10, rng.Intn(h+20)-10).Canon()
		c := [3]uint8{uint8(rng.Intn(256)), uint8(rng.Intn(256)), uint8(rng.Intn(256))}
		want := randomFrame(rng, w, h)
		got := bytes.Clone(want)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				if image.Pt(x, y).In(r) {
					copy(want[(y*w+x)*3:], c[:])
				}
			}
		}
		fillRect(got, w, h, r, c)
		if !bytes.Equal(got, want) {
			t.Fatalf("iteration %d: %v: %s", iter, r, firstDiff(got, want, w))
		}
	}
}
