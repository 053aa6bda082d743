package overlay

import (
	"bytes"
	"image"
	"image/color"
	"math"
	"math/rand"
	"testing"

	"gocv.io/x/gocv"
)

// refLabel is label as OpenCV drew it, text size and text, that the glyph
// path must match. With pad > 0 OpenCV draws on a frame that much larger
// all round, so nothing it draws is clipped, and the frame is cut back out.
func refLabel(frame []byte, w, h int, p image.Point, text string, bg [3]uint8, pad int) {
	pw, ph := w+2*pad, h+2*pad
	padded := make([]byte, pw*ph*3)
	for y := 0; y < h; y++ {
		copy(padded[((y+pad)*pw+pad)*3:], frame[y*w*3:(y+1)*w*3])
	}
	// The Mat wraps the padded frame's bytes: OpenCV draws into them.
	mat, err := gocv.NewMatFromBytes(ph, pw, gocv.MatTypeCV8UC3, padded)
	if err != nil {
		panic(err)
	}
	defer mat.Close()
	size, base := gocv.GetTextSizeWithBaseline(text, labelFont, labelScale, labelThickness)
	top := p.Y - size.Y - base - 2
	if top < 0 { // the top of the real frame, not the padded one
		top = p.Y
	}
	fillRect(padded, pw, ph, image.Rect(p.X, top, p.X+size.X+4, top+size.Y+base+2).Add(image.Pt(pad, pad)), bg)
	fg := [3]uint8{255, 255, 255}
	if int(bg[0])*299+int(bg[1])*587+int(bg[2])*114 > 150000 {
		fg = [3]uint8{0, 0, 0}
	}
	// The Mat holds RGB where OpenCV expects BGR: hand it the colour swapped.
	gocv.PutText(&mat, text, image.Pt(p.X+2+pad, top+size.Y+1+pad), labelFont, labelScale,
		color.RGBA{R: fg[2], G: fg[1], B: fg[0], A: 255}, labelThickness)
	for y := 0; y < h; y++ {
		copy(frame[y*w*3:(y+1)*w*3], padded[((y+pad)*pw+pad)*3:])
	}
}

// randomText is a label-like text: mostly printable ASCII, sometimes with
// bytes putText shows as '?', and a NUL, where cgo's C string ends.
func randomText(rng *rand.Rand) string {
	b := make([]byte, rng.Intn(30))
	for i := range b {
		switch rng.Intn(40) {
		case 0:
			b[i] = byte(128 + rng.Intn(128))
		case 1:
			b[i] = byte(1 + rng.Intn(31))
		default:
			b[i] = byte(' ' + rng.Intn(95))
		}
	}
	if rng.Intn(30) == 0 && len(b) > 0 {
		b[rng.Intn(len(b))] = 0
	}
	return string(b)
}

func TestTextSizeMatchesOpenCV(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	texts := []string{"", " ", "person 0.93", "café 0.50", "WWWWWWWWWW", "iiii", "a\x00b"}
	for range 2000 {
		texts = append(texts, randomText(rng))
	}
	for _, text := range texts {
		wantSize, wantBase := gocv.GetTextSizeWithBaseline(text, labelFont, labelScale, labelThickness)
		gotSize, gotBase := face().textSize(cText(text))
		if gotSize != wantSize || gotBase != wantBase {
			t.Fatalf("%q: size %v baseline %d, OpenCV says %v and %d", text, gotSize, gotBase, wantSize, wantBase)
		}
	}
}

// TestLabelsMatchOpenCV draws random labels both ways, anywhere from well
// inside the frame to hanging off its edges, and wants the same pixels.
//
// Where the frame cuts a label there is one difference, by design: OpenCV
// clips a stroke to the frame before rasterising it, which can move the
// stroke's visible part by a pixel, while a glyph is the same whole or cut.
// There the reference is OpenCV drawing unclipped, cut to the frame.
func TestLabelsMatchOpenCV(t *testing.T) {
	const w, h = 320, 120
	rng := rand.New(rand.NewSource(13))
	background := randomFrame(rng, w, h)
	var inside, cut int
	for iter := range 4000 {
		text := randomText(rng)
		p := image.Pt(rng.Intn(w+40)-40, rng.Intn(h+20)-10)
		bg := palette[rng.Intn(len(palette))]
		if rng.Intn(5) == 0 {
			bg = [3]uint8{}
		}
		frame := background
		got := bytes.Clone(frame)
		// No frame width: the reference hangs off the right edge too.
		label(got, w, h, labelRect(text, p, math.MaxInt), text, bg)

		unclipped := bytes.Clone(frame)
		refLabel(unclipped, w, h, p, text, bg, 64)
		if !bytes.Equal(got, unclipped) {
			t.Fatalf("iteration %d: label %q at %v: %s", iter, text, p, firstDiff(got, unclipped, w))
		}
		clipped := bytes.Clone(frame)
		refLabel(clipped, w, h, p, text, bg, 0)
		if bytes.Equal(clipped, unclipped) {
			inside++
		} else {
			cut++
		}
	}
	t.Logf("%d labels drawn the same by OpenCV whole or cut, %d not", inside, cut)
	if inside < 1000 || cut < 100 {
		t.Errorf("%d labels OpenCV draws the same whole or cut, %d it does not: the test misses a case", inside, cut)
	}
}
