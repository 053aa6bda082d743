package overlay

import (
	"image"
	"math/rand"
	"testing"

	"github.com/htcstream/htcstream/detection"
)

func gray(w, h int, v byte) []byte {
	f := make([]byte, w*h*3)
	for i := range f {
		f[i] = v
	}
	return f
}

func px(f []byte, w, x, y int) [3]byte {
	i := (y*w + x) * 3
	return [3]byte{f[i], f[i+1], f[i+2]}
}

// square returns an instance whose mask is a filled s x s square at (x, y),
// inside a region with a one-pixel margin, as cascade pastes them.
func square(x, y, s, class int) detection.Detection {
	in := detection.Detection{Box: detection.Box{X1: float32(x), Y1: float32(y), X2: float32(x + s), Y2: float32(y + s)}, Label: class, Score: 0.9,
		Mask: detection.Mask{X: x - 1, Y: y - 1, W: s + 2, H: s + 2}}
	in.Mask.Bits = make([]byte, in.Mask.W*in.Mask.H)
	for my := 1; my <= s; my++ {
		for mx := 1; mx <= s; mx++ {
			in.Mask.Bits[my*in.Mask.W+mx] = 1
		}
	}
	return in
}

func TestMaskBlendAndContour(t *testing.T) {
	const w, h = 64, 48
	f := gray(w, h, 100)
	r := NewRenderer(Style{Alpha: 0.5, ColorBy: ByClass, Contour: true}, []string{"a", "b", "c", "d"})
	in := square(10, 10, 20, 3) // palette[3] = (214, 39, 40)
	if err := r.Draw(f, w, h, []detection.Detection{in}, nil); err != nil {
		t.Fatal(err)
	}
	// Inside: half way between grey 100 and the class colour.
	if got := px(f, w, 20, 20); got != [3]byte{157, 69, 70} {
		t.Errorf("inside pixel %v, want [157 69 70]", got)
	}
	// The boundary is drawn solid.
	if got := px(f, w, 10, 20); got != [3]byte{214, 39, 40} {
		t.Errorf("contour pixel %v", got)
	}
	// Outside the mask, even inside its region: untouched.
	for _, p := range [][2]int{{9, 20}, {30, 30}, {0, 0}, {63, 47}} {
		if got := px(f, w, p[0], p[1]); got != [3]byte{100, 100, 100} {
			t.Errorf("pixel %v changed to %v", p, got)
		}
	}
}

func TestBoxesLabelsAndHUDDraw(t *testing.T) {
	const w, h = 200, 120
	f := gray(w, h, 0)
	r := NewRenderer(DefaultStyle(), []string{"circle"})
	in := square(60, 50, 40, 0)
	if err := r.Draw(f, w, h, []detection.Detection{in}, &HUD{Stream: "cam0", FPS: 12.5}); err != nil {
		t.Fatal(err)
	}
	// The box's left edge at x=60 carries the class colour (31, 119, 180).
	if got := px(f, w, 60, 75); got != [3]byte{31, 119, 180} {
		t.Errorf("box edge %v", got)
	}
	// The label sits on a filled box above the instance.
	if got := px(f, w, 61, 45); got == ([3]byte{}) {
		t.Errorf("no label background above the box")
	}
	// The HUD's text is white on black in the corner: some white pixels.
	white := 0
	for y := 0; y < 24; y++ {
		for x := 0; x < 120; x++ {
			if p := px(f, w, x, y); p[0] > 200 && p[1] > 200 && p[2] > 200 {
				white++
			}
		}
	}
	if white < 20 {
		t.Errorf("HUD text not drawn (%d white pixels)", white)
	}
}

func TestClippingAndBadMasks(t *testing.T) {
	const w, h = 32, 32
	f := gray(w, h, 50)
	r := NewRenderer(DefaultStyle(), nil)
	edge := square(-5, 20, 30, 7) // hangs off the left and bottom
	bad := square(5, 5, 4, 1)
	bad.Mask.Bits = bad.Mask.Bits[:3]
	err := r.Draw(f, w, h, []detection.Detection{edge, bad, {Box: detection.Box{X1: -1e6, Y1: -1e6, X2: 1e6, Y2: 1e6}, Label: -3}}, nil)
	if err == nil {
		t.Fatal("a mask that does not fit its region must be reported")
	}
	if got := px(f, w, 2, 25); got == ([3]byte{50, 50, 50}) {
		t.Error("the clipped instance was not drawn")
	}
	if err := r.Draw(f, w, h+1, nil, nil); err == nil {
		t.Fatal("a frame buffer too small for its size must be an error")
	}
}

// instances100 makes 100 instances of realistic sizes (20-300 px) spread
// over a 1080p frame, masks as ellipses in their boxes.
func instances100(w, h int) []detection.Detection {
	rng := rand.New(rand.NewSource(1))
	out := make([]detection.Detection, 100)
	for i := range out {
		s := 20 + rng.Intn(280)
		x, y := rng.Intn(w-s), rng.Intn(h-s)
		in := detection.Detection{Box: detection.Box{X1: float32(x), Y1: float32(y), X2: float32(x + s), Y2: float32(y + s)}, Label: i % 80, Score: rng.Float32(),
			Mask: detection.Mask{X: x - 1, Y: y - 1, W: s + 2, H: s + 2}}
		if in.Mask.X < 0 {
			in.Mask.X, in.Mask.W = 0, s+1
		}
		if in.Mask.Y < 0 {
			in.Mask.Y, in.Mask.H = 0, s+1
		}
		in.Mask.Bits = make([]byte, in.Mask.W*in.Mask.H)
		cx, cy, rr := float32(x+s/2), float32(y+s/2), float32(s/2)
		for my := 0; my < in.Mask.H; my++ {
			for mx := 0; mx < in.Mask.W; mx++ {
				dx, dy := float32(in.Mask.X+mx)-cx, float32(in.Mask.Y+my)-cy
				if dx*dx+dy*dy <= rr*rr {
					in.Mask.Bits[my*in.Mask.W+mx] = 1
				}
			}
		}
		out[i] = in
	}
	return out
}

// BenchmarkDraw100Instances1080p is the overlay's speed goal: drawing 100
// instances with masks, contours, boxes and labels on a 1920x1080 frame
// (goal: under 5 ms on the 2-core reference machine).
func BenchmarkDraw100Instances1080p(b *testing.B) {
	const w, h = 1920, 1080
	f := gray(w, h, 90)
	ins := instances100(w, h)
	for _, c := range []struct {
		name  string
		style Style
	}{{"all", DefaultStyle()}, {"masks-only", Style{Alpha: 0.5, ColorBy: ByClass, Contour: true}}} {
		r := NewRenderer(c.style, nil)
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := r.Draw(f, w, h, ins, &HUD{Stream: "bench", FPS: 30}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Labels of stacked detections and of one under the HUD go where they cover
// no other label, and a label at the right edge moves left into the frame.
func TestLabelsAvoidEachOther(t *testing.T) {
	const w, h = 320, 240
	var lp labelPlacer
	hud := labelRect("cam  25.0 fps  40 ms", image.Pt(4, 4+labelHeight), w)
	lp.taken = append(lp.taken, hud)
	boxes := []image.Rectangle{
		image.Rect(100, 100, 200, 180), // three detections of one object
		image.Rect(101, 101, 199, 181),
		image.Rect(99, 102, 201, 179),
		image.Rect(2, 10, 60, 60), // under the HUD
	}
	var got []image.Rectangle
	for _, b := range boxes {
		got = append(got, lp.place("square 0.97", b, w, h))
	}
	all := append([]image.Rectangle{hud}, got...)
	for i := range all {
		if !all[i].In(image.Rect(0, 0, w, h)) {
			t.Errorf("label %d at %v leaves the frame", i, all[i])
		}
		for j := range i {
			if all[i].Overlaps(all[j]) {
				t.Errorf("labels %v and %v overlap", all[j], all[i])
			}
		}
	}
	if got[0].Max.Y != boxes[0].Min.Y {
		t.Errorf("first label %v not just above its box %v", got[0], boxes[0])
	}
	edge := lp.place("circle 0.50", image.Rect(300, 200, 319, 239), w, h)
	if edge.Max.X > w || edge.Min.X >= 300 {
		t.Errorf("label at the right edge: %v", edge)
	}
}
