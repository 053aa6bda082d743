package track

import (
	"slices"
	"testing"
	"time"

	"github.com/htcstream/htcstream/detection"
)

func fullMask(b [4]float32) detection.Mask {
	m := detection.Mask{X: int(b[0]), Y: int(b[1]), W: int(b[2] - b[0]), H: int(b[3] - b[1])}
	m.Bits = make([]byte, m.W*m.H)
	for i := range m.Bits {
		m.Bits[i] = 1
	}
	return m
}

// A keyframe every 5 frames of an object moving 4 px a frame: between two
// keyframes Predict puts it where it is.
func TestPredictFollowsMotion(t *testing.T) {
	tr, _ := NewTracker(DefaultSettings())
	m := mover{x: 10, y: 50, w: 40, h: 80, vx: 4}
	const every = 5
	for f := 0; f <= 80; f += every {
		tr.Update(int64(f), time.Duration(f)*frameDur, []detection.Detection{{Box: xyxy(m.box(f)), Score: 0.9, Mask: fullMask(m.box(f))}})
	}
	before := tr.Predict(80 * frameDur)
	for k := 1; k < every; k++ {
		f := 80 + k
		ps := tr.Predict(time.Duration(f) * frameDur)
		if len(ps) != 1 || ps[0].ID != 1 {
			t.Fatalf("frame %d: %+v", f, ps)
		}
		want := m.box(f)
		for i := range want {
			if d := ps[0].Box[i] - want[i]; d > 2 || d < -2 {
				t.Fatalf("frame %d: predicted %v, object at %v", f, ps[0].Box, want)
			}
		}
		if ps[0].Seen != m.box(80) || ps[0].Mask.W != 40 {
			t.Fatalf("frame %d: last seen %v mask %dx%d", f, ps[0].Seen, ps[0].Mask.W, ps[0].Mask.H)
		}
		if ps[0].Speed < 0.05 {
			t.Fatalf("a box moving a tenth of its width a frame has speed %v", ps[0].Speed)
		}
	}
	// Predict changed nothing.
	if after := tr.Predict(80 * frameDur); !slices.EqualFunc(before, after, func(a, b Predicted) bool { return a.Box == b.Box }) {
		t.Fatalf("Predict moved the tracker: %v then %v", before, after)
	}
}

// A track is propagated only while the model sees it: missing from the
// last keyframe, ended, or ended for all, it is never in Predict's answer.
func TestPredictNeverShowsATrackThatIsGone(t *testing.T) {
	s := DefaultSettings()
	s.MaxMisses = 2
	tr, _ := NewTracker(s)
	m := mover{x: 10, y: 50, w: 40, h: 80, vx: 4}
	for f := 0; f < 4; f++ {
		tr.Update(int64(f), time.Duration(f)*frameDur, []detection.Detection{{Box: xyxy(m.box(f)), Score: 0.9}})
	}
	if ps := tr.Predict(4 * frameDur); len(ps) != 1 {
		t.Fatalf("the seen track: %+v", ps)
	}
	for f := 4; f < 8; f++ {
		res := tr.Update(int64(f), time.Duration(f)*frameDur, nil)
		if ps := tr.Predict(time.Duration(f)*frameDur + frameDur/2); len(ps) != 0 {
			t.Fatalf("frame %d (ended %v): a track not seen is propagated: %+v", f, res.Ended, ps)
		}
	}
	tr.Update(8, 8*frameDur, []detection.Detection{{Box: xyxy(m.box(8)), Score: 0.9}})
	tr.EndAll()
	if ps := tr.Predict(9 * frameDur); len(ps) != 0 {
		t.Fatalf("after EndAll: %+v", ps)
	}
}

func TestWarpMask(t *testing.T) {
	from := [4]float32{10, 10, 20, 30}
	m := fullMask(from)
	m.Bits[0] = 0 // the top-left pixel is outside the object

	// twice the size, moved: the mask doubles with the box
	w := WarpMask(m, from, [4]float32{40, 40, 60, 80}, 100, 100)
	if w.X != 40 || w.Y != 40 || w.W != 20 || w.H != 40 {
		t.Fatalf("scaled region %d,%d %dx%d", w.X, w.Y, w.W, w.H)
	}
	if w.Bits[0] != 0 || w.Bits[1] != 0 || w.Bits[w.W] != 0 || w.Bits[2] != 1 || maskArea(&w) != 20*40-4 {
		t.Fatalf("scaled mask: area %d, corner %v", maskArea(&w), w.Bits[:3])
	}

	// same size: a move that shares the bits
	w = WarpMask(m, from, [4]float32{50, 60, 60, 80}, 100, 100)
	if w.X != 50 || w.Y != 60 || &w.Bits[0] != &m.Bits[0] {
		t.Fatalf("moved region %d,%d, shared %v", w.X, w.Y, &w.Bits[0] == &m.Bits[0])
	}

	// partly out of the frame: clipped
	w = WarpMask(m, from, [4]float32{95, -5, 105, 15}, 100, 100)
	if w.X != 95 || w.Y != 0 || w.W != 5 || w.H != 15 || len(w.Bits) != 75 {
		t.Fatalf("clipped region %d,%d %dx%d (%d bits)", w.X, w.Y, w.W, w.H, len(w.Bits))
	}

	// wholly out, or degenerate: empty
	if w := WarpMask(m, from, [4]float32{200, 200, 210, 220}, 100, 100); w.W != 0 {
		t.Fatalf("outside the frame: %+v", w)
	}
	if w := WarpMask(m, from, [4]float32{5, 5, 5, 9}, 100, 100); w.W != 0 {
		t.Fatalf("empty box: %+v", w)
	}
}

// A bar standing up blended with the same bar lying down, a quarter of
// the way: the shape is nearer the standing bar (taller than wide) but
// no longer the same; halfway, a shape symmetric between the two; and
// at the ends, each side as it is.
func TestBlendMasksTurnsAShapeGradually(t *testing.T) {
	bar := func(x, y, w, h int) detection.Mask {
		m := detection.Mask{X: 0, Y: 0, W: 40, H: 40, Bits: make([]byte, 1600)}
		for r := y; r < y+h; r++ {
			for c := x; c < x+w; c++ {
				m.Bits[r*40+c] = 1
			}
		}
		return m
	}
	standing, lying := bar(16, 4, 8, 32), bar(4, 16, 32, 8)
	extent := func(m detection.Mask) (w, h int) {
		c0, r0, c1, r1 := 1<<30, 1<<30, -1, -1
		for r := range m.H {
			for c := range m.W {
				if m.Bits[r*m.W+c] != 0 {
					c0, r0, c1, r1 = min(c0, c), min(r0, r), max(c1, c), max(r1, r)
				}
			}
		}
		return c1 - c0 + 1, r1 - r0 + 1
	}
	if w, h := extent(BlendMasks(standing, lying, 0.25)); !(h > w && w > 8 && h < 32) {
		t.Fatalf("a quarter of the way: %d x %d, want taller than wide, between the bars", w, h)
	}
	if w, h := extent(BlendMasks(standing, lying, 0.5)); w != h {
		t.Fatalf("halfway: %d x %d, want as wide as tall", w, h)
	}
	if m := BlendMasks(standing, lying, 0); &m.Bits[0] != &standing.Bits[0] {
		t.Fatal("at 0 the first mask is not taken as it is")
	}
	if m := BlendMasks(standing, detection.Mask{}, 0.7); &m.Bits[0] != &standing.Bits[0] {
		t.Fatal("with the other side empty the first mask is not taken as it is")
	}
}

// BenchmarkBlendMasks is one propagated object's blend in smooth timing
// at 1080p (a 120 x 220 person, the two keyframes' masks 6 px apart).
func BenchmarkBlendMasks(b *testing.B) {
	ellipse := func(dx int) detection.Mask {
		m := detection.Mask{X: 100 + dx, Y: 100, W: 120, H: 220, Bits: make([]byte, 120*220)}
		for r := range 220 {
			for c := range 120 {
				x, y := float64(c-60)/60, float64(r-110)/110
				if x*x+y*y <= 1 {
					m.Bits[r*120+c] = 1
				}
			}
		}
		return m
	}
	m0, m1 := ellipse(0), ellipse(6)
	for range b.N {
		BlendMasks(m0, m1, 0.4)
	}
}
