package flow

import (
	"math"
	"testing"

	"github.com/htcstream/htcstream/detection"
)

const fw, fh = 320, 240

// scene draws a disc of radius r centred at (cx, cy) over a background
// that stays, both blocks of random greys (the disc's move with it); not
// textured, the picture is one grey: the disc cannot be told from the
// background (its outline alone is enough to follow it otherwise).
func scene(cx, cy, r float64, textured bool) Frame {
	rgb := make([]byte, fw*fh*3)
	for y := range fh {
		for x := range fw {
			v := byte(90)
			if textured {
				v = noise(x/6, y/6, 1)
			}
			dx, dy := float64(x)-cx, float64(y)-cy
			if dx*dx+dy*dy <= r*r {
				if textured {
					v = noise(int(math.Floor(dx/4)), int(math.Floor(dy/4)), 2)
				}
			}
			p := rgb[(y*fw+x)*3:]
			p[0], p[1], p[2] = v, v/2, 255-v
		}
	}
	return Frame{RGB: rgb, W: fw, H: fh}
}

// noise is a grey for a cell, the same on every call.
func noise(x, y, seed int) byte {
	h := uint32(x*73856093) ^ uint32(y*19349663) ^ uint32(seed*83492791)
	h ^= h >> 13
	h *= 0x5bd1e995
	h ^= h >> 15
	return byte(h)
}

// discMask is the disc's mask, in frame pixels, with its box.
func discMask(cx, cy, r float64) (detection.Mask, [4]float32) {
	x0, y0 := int(cx-r), int(cy-r)
	n := int(2*r) + 1
	m := detection.Mask{X: x0, Y: y0, W: n, H: n, Bits: make([]byte, n*n)}
	for y := range n {
		for x := range n {
			dx, dy := float64(x0+x)-cx, float64(y0+y)-cy
			if dx*dx+dy*dy <= r*r {
				m.Bits[y*n+x] = 1
			}
		}
	}
	return m, [4]float32{float32(cx - r), float32(cy - r), float32(cx + r), float32(cy + r)}
}

// The disc moves 4 px right and 3 px down a frame over a background
// that stays: its box follows the disc (the corners of the background
// inside the box are not on the mask), not the background.
func TestStepFollowsTheObjectNotTheBackground(t *testing.T) {
	m := NewMover()
	mask, box := discMask(100, 80, 20)
	m.Start(7, scene(100, 80, 20, true), box, mask)
	boxes := make([][4]float32, 1)
	for i := 1; i <= 8; i++ {
		cx, cy := 100+4*float64(i), 80+3*float64(i)
		_, truth := discMask(cx, cy, 20)
		m.Step(scene(cx, cy, 20, true), []Want{{Key: 7, Size: box, Fallback: box}}, boxes)
		got := boxes[0]
		if math.Abs(float64(got[0]-truth[0])) > 1.5 || math.Abs(float64(got[1]-truth[1])) > 1.5 ||
			math.Abs(float64(got[2]-got[0]-(box[2]-box[0]))) > 1e-3 {
			t.Fatalf("frame %d: box %v, the disc is at %v", i, got, truth)
		}
	}
}

// An object that cannot be told from the background has nothing to
// follow: Step gives the fallback, and so does an object never started.
func TestStepFallsBackWithoutCorners(t *testing.T) {
	m := NewMover()
	mask, box := discMask(100, 80, 20)
	m.Start(1, scene(100, 80, 20, false), box, mask)
	fallback := [4]float32{90, 70, 130, 110}
	boxes := make([][4]float32, 2)
	m.Step(scene(104, 83, 20, false), []Want{{Key: 1, Size: box, Fallback: fallback}, {Key: 2, Size: box, Fallback: box}}, boxes)
	if boxes[0] != fallback || boxes[1] != box {
		t.Fatalf("boxes %v, want the fallbacks %v and %v", boxes, fallback, box)
	}
	// the object goes on from the fallback
	m.Keep([]uint64{2})
	if len(m.objs) != 0 {
		t.Fatalf("Keep left %d objects", len(m.objs))
	}
}

// An object leaving the frame is followed while part of it shows, and
// its region is clipped to the frame (no read past the picture).
func TestStepAtTheFrameEdge(t *testing.T) {
	m := NewMover()
	mask, box := discMask(290, 120, 20)
	m.Start(3, scene(290, 120, 20, true), box, mask)
	boxes := make([][4]float32, 1)
	for i := 1; i <= 10; i++ {
		cx := 290 + 5*float64(i)
		m.Step(scene(cx, 120, 20, true), []Want{{Key: 3, Size: box, Fallback: box}}, boxes)
		if c := (boxes[0][0] + boxes[0][2]) / 2; i <= 3 && math.Abs(float64(c)-cx) > 2 {
			t.Fatalf("frame %d: centre %.1f, the disc's %.1f", i, c, cx)
		}
	}
}

// An image folder's next picture may be smaller than the last (ingest logs
// "image size changed" and goes on): the object's region, taken on the
// larger picture, is read from the smaller one.
func TestStepOnASmallerFrameFallsBack(t *testing.T) {
	f := scene(250, 180, 30, true)
	mask, box := discMask(250, 180, 30)
	m := NewMover()
	m.Start(1, f, box, mask)
	small := Frame{RGB: make([]byte, 160*120*3), W: 160, H: 120}
	boxes := make([][4]float32, 1)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Step panicked on a smaller frame: %v", r)
		}
	}()
	m.Step(small, []Want{{Key: 1, Size: box, Fallback: box}}, boxes)
}
