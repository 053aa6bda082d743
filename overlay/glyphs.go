package overlay

import (
	"image"
	"image/color"
	"math"
	"strings"
	"sync"

	"gocv.io/x/gocv"
)

// Labels are set in OpenCV's Hershey simplex font, but not by calling
// putText for every label: two cgo calls a label (size, then text) cost
// some 30 µs, 3 ms for a frame of 100 instances. Instead every printable
// ASCII character is rasterised by OpenCV once, and labels are composed
// from those glyphs in Go, pixel for pixel what putText draws.
//
// putText draws thin (thickness 1, 8-connected, not antialiased) strokes,
// so a glyph is just the set of pixels it paints. It places characters in
// fixed point: each advances the pen by its width times the scale, which
// at scale 0.5 is a whole or a half pixel, so a glyph is rasterised twice,
// for a pen on a pixel boundary and for one half way into a pixel.

const (
	labelFont      = gocv.FontHersheySimplex
	labelScale     = 0.5
	labelThickness = 1
	labelHeight    = 16
)

// glyphPixel is a pixel a glyph paints, relative to the pen: dx from the
// pixel the pen is in, dy from the text's baseline origin.
type glyphPixel struct{ dx, dy int16 }

type glyph struct {
	adv int             // how far the glyph moves the pen, in half pixels
	pix [2][]glyphPixel // painted with the pen on a pixel boundary, and half way into a pixel
}

// labelFace is the label font's glyphs for ' ' to '~'.
type labelFace struct {
	glyphs [127 - ' ']glyph
	// height and baseline are getTextSize's, which depend on the font only.
	height, baseline int
}

// face is built on first use: it takes a few hundred cgo calls, once.
var face = sync.OnceValue(buildFace)

// Where glyphs are rasterised: a canvas with room around the pen.
const (
	canvasW, canvasH = 128, 64
	penX, penY       = 16, 40
)

func buildFace() *labelFace {
	f := &labelFace{}
	size, base := gocv.GetTextSizeWithBaseline("x", labelFont, labelScale, labelThickness)
	f.height, f.baseline = size.Y, base
	for i := range f.glyphs {
		// getTextSize is cvRound(sum of advances*scale + thickness); for two
		// of a character that sum is a whole number, so this is exact.
		c := byte(' ' + i)
		f.glyphs[i].adv = gocv.GetTextSize(string([]byte{c, c}), labelFont, labelScale, labelThickness).X - labelThickness
	}
	// To put the pen half way into a pixel, draw the narrowest glyph of odd
	// advance first, then two spaces to keep its pixels clear of the
	// glyph's. Without such a glyph no pen is ever half way.
	odd := -1
	for i, g := range f.glyphs {
		if g.adv%2 == 1 && (odd < 0 || g.adv < f.glyphs[odd].adv) {
			odd = i
		}
	}
	canvas := gocv.NewMatWithSize(canvasH, canvasW, gocv.MatTypeCV8U)
	defer canvas.Close()
	for i := range f.glyphs {
		c := byte(' ' + i)
		f.glyphs[i].pix[0] = rasterise(&canvas, "", 2*penX, 0, c)
		if odd >= 0 {
			prefix := string([]byte{byte(' ' + odd), ' ', ' '})
			pen := 2*penX + f.glyphs[odd].adv + 2*f.glyphs[0].adv
			// Only pixels right of the first space's middle are the glyph's.
			clear := (2*penX + f.glyphs[odd].adv + f.glyphs[0].adv) / 2
			f.glyphs[i].pix[1] = rasterise(&canvas, prefix, pen, clear, c)
		}
	}
	return f
}

// rasterise draws prefix and c on the blank canvas with OpenCV and returns
// the pixels at or right of column clear, relative to c's pen (pen is in
// half pixels).
func rasterise(canvas *gocv.Mat, prefix string, pen, clear int, c byte) []glyphPixel {
	canvas.SetTo(gocv.NewScalar(0, 0, 0, 0))
	gocv.PutText(canvas, prefix+string(c), image.Pt(penX, penY), labelFont, labelScale, color.RGBA{R: 255, G: 255, B: 255, A: 255}, labelThickness)
	data, err := canvas.DataPtrUint8()
	if err != nil {
		panic(err) // a continuous 8-bit Mat we made ourselves
	}
	var pix []glyphPixel
	for y := 0; y < canvasH; y++ {
		for x := clear; x < canvasW; x++ {
			if data[y*canvasW+x] != 0 {
				pix = append(pix, glyphPixel{int16(x - (pen >> 1)), int16(y - penY)})
			}
		}
	}
	return pix
}

// glyph returns c's glyph; like putText, it draws '?' for bytes outside
// printable ASCII.
func (f *labelFace) glyph(c byte) *glyph {
	if c < ' ' || c > '~' {
		c = '?'
	}
	return &f.glyphs[c-' ']
}

// textSize is getTextSize of text: its width and height above the
// baseline, and the baseline's depth.
func (f *labelFace) textSize(text string) (image.Point, int) {
	adv := 0
	for i := 0; i < len(text); i++ {
		adv += f.glyph(text[i]).adv
	}
	// cvRound rounds half to even.
	return image.Pt(int(math.RoundToEven(float64(adv)/2+labelThickness)), f.height), f.baseline
}

// draw paints text in colour fg with its baseline origin at org, as
// putText would, clipped to the frame.
func (f *labelFace) draw(frame []byte, w, h int, org image.Point, text string, fg [3]uint8) {
	pen := 2 * org.X
	for i := 0; i < len(text); i++ {
		g := f.glyph(text[i])
		x0 := pen >> 1
		for _, q := range g.pix[pen&1] {
			x, y := x0+int(q.dx), org.Y+int(q.dy)
			if x >= 0 && x < w && y >= 0 && y < h {
				p := frame[(y*w+x)*3 : (y*w+x)*3+3]
				p[0], p[1], p[2] = fg[0], fg[1], fg[2]
			}
		}
		pen += g.adv
	}
}

// cText is text as OpenCV sees it through cgo: a C string ends at a NUL.
func cText(text string) string {
	if i := strings.IndexByte(text, 0); i >= 0 {
		return text[:i]
	}
	return text
}
