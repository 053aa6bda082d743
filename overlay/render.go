package overlay

import (
	"fmt"
	"image"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/htcstream/htcstream/detection"
)

// ColorBy chooses what an instance's colour follows.
type ColorBy string

const (
	ByClass    ColorBy = "class"    // every instance of a class alike
	ByInstance ColorBy = "instance" // each instance of a frame its own
)

// Validate accepts the two ways of colouring.
func (c ColorBy) Validate() error {
	if c != ByClass && c != ByInstance {
		return fmt.Errorf("color_by %q: want %s or %s", c, ByClass, ByInstance)
	}
	return nil
}

// Style says what to draw. The zero value draws nothing but masks at alpha
// 0; use DefaultStyle.
type Style struct {
	// Alpha is the mask's opacity, 0..1.
	Alpha   float32
	ColorBy ColorBy
	Contour bool
	Boxes   bool
	Labels  bool
	HUD     bool
}

// Validate checks the opacity and the colouring.
func (s Style) Validate() error {
	if !(s.Alpha >= 0 && s.Alpha <= 1) {
		return fmt.Errorf("alpha %v: want 0..1", s.Alpha)
	}
	return s.ColorBy.Validate()
}

// DefaultStyle draws everything, masks at half opacity, coloured by class.
func DefaultStyle() Style {
	return Style{Alpha: 0.5, ColorBy: ByClass, Contour: true, Boxes: true, Labels: true, HUD: true}
}

// HUD is the status drawn in the top-left corner.
type HUD struct {
	Stream  string
	FPS     float64
	Latency time.Duration
}

// Renderer draws instances with one style and one set of class names.
// It keeps no per-frame state and is safe for concurrent use.
type Renderer struct {
	style   Style
	classes []string
}

// NewRenderer returns a renderer; classes name the instance classes.
func NewRenderer(style Style, classes []string) *Renderer {
	if style.Labels || style.HUD {
		face() // rasterise the label font now (~2 ms, once), not on the first frame
	}
	return &Renderer{style: style, classes: classes}
}

// Draw draws instances (and hud, when the style asks and hud is not nil)
// onto an RGB24 frame of w x h pixels, in place. Instances partly or wholly
// outside the frame are clipped; a mask whose size does not match its
// region is an error, reported after the rest is drawn. An instance's Label
// indexes the renderer's class names and, colouring by class, picks its
// colour; with a TrackID its label reads "person #12 0.93", and colouring
// by instance follows the track, so an object keeps its colour from frame
// to frame.
func (r *Renderer) Draw(frame []byte, w, h int, instances []detection.Detection, hud *HUD) error {
	if w <= 0 || h <= 0 || len(frame) < w*h*3 {
		return fmt.Errorf("overlay: frame of %d bytes is not %dx%d RGB", len(frame), w, h)
	}
	var bad error
	for i := range instances {
		in := &instances[i]
		if len(in.Mask.Bits) != 0 && (in.Mask.W <= 0 || in.Mask.H <= 0 || len(in.Mask.Bits) != in.Mask.W*in.Mask.H) {
			bad = fmt.Errorf("overlay: instance %d has a %d-byte mask for a %dx%d region", i, len(in.Mask.Bits), in.Mask.W, in.Mask.H)
		}
	}
	r.drawMasks(frame, w, h, instances)
	if !r.style.Boxes && !r.style.Labels && !(r.style.HUD && hud != nil) {
		return bad
	}
	// Labels are placed before any is drawn so that each can avoid those
	// placed before it and the HUD: in a crowd, labels drawn where they fall
	// cover each other and nobody can read them.
	var placed labelPlacer
	var hudText string
	var hudRect image.Rectangle
	if r.style.HUD && hud != nil {
		hudText = fmt.Sprintf("%s  %.1f fps  %d ms", hud.Stream, hud.FPS, hud.Latency.Milliseconds())
		hudRect = labelRect(hudText, image.Pt(4, 4+labelHeight), w)
		placed.taken = append(placed.taken, hudRect)
	}
	for i := range instances {
		in := &instances[i]
		c := r.color(in, i)
		box := image.Rect(int(in.Box.X1), int(in.Box.Y1), int(in.Box.X2+0.5), int(in.Box.Y2+0.5))
		if r.style.Boxes {
			strokeRect(frame, w, h, box, 2, c)
		}
		if r.style.Labels {
			text := fmt.Sprintf("%s %.2f", r.className(in.Label), in.Score)
			if in.TrackID != 0 {
				text = fmt.Sprintf("%s #%d %.2f", r.className(in.Label), in.TrackID, in.Score)
			}
			label(frame, w, h, placed.place(text, box, w, h), text, c)
		}
	}
	if hudText != "" {
		label(frame, w, h, hudRect, hudText, [3]uint8{0, 0, 0})
	}
	return bad
}

// drawMasks blends every instance's mask in order. Frames are split into
// horizontal bands drawn concurrently: each band still sees the instances in
// order, so overlaps come out exactly as a sequential draw.
func (r *Renderer) drawMasks(frame []byte, w, h int, instances []detection.Detection) {
	var pixels int
	for i := range instances {
		pixels += len(instances[i].Mask.Bits)
	}
	bands := min(runtime.GOMAXPROCS(0), 4, max(1, pixels/(64*1024)))
	a := uint32(clamp01(r.style.Alpha)*256 + 0.5)
	draw := func(top, bottom int) {
		for i := range instances {
			in := &instances[i]
			if len(in.Mask.Bits) == 0 || len(in.Mask.Bits) != in.Mask.W*in.Mask.H {
				continue
			}
			blendMask(frame, w, top, bottom, in, r.color(in, i), a, r.style.Contour)
		}
	}
	if bands == 1 {
		draw(0, h)
		return
	}
	var wg sync.WaitGroup
	for b := 0; b < bands; b++ {
		wg.Add(1)
		go func(top, bottom int) {
			defer wg.Done()
			draw(top, bottom)
		}(h*b/bands, h*(b+1)/bands)
	}
	wg.Wait()
}

// labelRect is the filled box of text's label hanging above p (below it
// when that would leave the frame), moved left to stay within w.
func labelRect(text string, p image.Point, w int) image.Rectangle {
	size, base := face().textSize(cText(text))
	below := image.Rect(p.X, p.Y, p.X+size.X+4, p.Y+size.Y+base+2)
	if below.Max.X > w && below.Min.X > 0 {
		below = below.Sub(image.Pt(min(below.Max.X-w, below.Min.X), 0))
	}
	if above := below.Sub(image.Pt(0, below.Dy())); above.Min.Y >= 0 {
		return above
	}
	return below
}

// labelPlacer remembers the label boxes of one frame.
type labelPlacer struct {
	taken []image.Rectangle
}

// place picks the box of an instance's label: above the instance's box, else
// inside its top, inside its bottom or below it, the first that stays in the
// frame and covers no earlier label; where the label fits (above, or inside
// the top at the frame's top edge) when every place is covered.
func (lp *labelPlacer) place(text string, box image.Rectangle, w, h int) image.Rectangle {
	// Every candidate is the first one moved up or down: one text size.
	chosen := labelRect(text, box.Min, w)
	lh := chosen.Dy()
	for _, top := range [...]int{box.Min.Y - lh, box.Min.Y, box.Max.Y - lh, box.Max.Y} {
		c := chosen.Add(image.Pt(0, top-chosen.Min.Y))
		if top < 0 || c.Max.Y > h || c.Min.X >= w || c.Max.X <= 0 {
			continue
		}
		if !slices.ContainsFunc(lp.taken, c.Overlaps) {
			chosen = c
			break
		}
	}
	lp.taken = append(lp.taken, chosen)
	return chosen
}

// label draws text on the filled box r, in black or white, whichever reads
// better on bg.
func label(frame []byte, w, h int, r image.Rectangle, text string, bg [3]uint8) {
	f := face()
	fillRect(frame, w, h, r, bg)
	fg := [3]uint8{255, 255, 255}
	if int(bg[0])*299+int(bg[1])*587+int(bg[2])*114 > 150000 {
		fg = [3]uint8{0, 0, 0}
	}
	f.draw(frame, w, h, image.Pt(r.Min.X+2, r.Min.Y+f.height+1), cText(text), fg)
}

func (r *Renderer) className(c int) string { return detection.ClassName(c, r.classes) }

func (r *Renderer) color(in *detection.Detection, i int) [3]uint8 {
	if r.style.ColorBy == ByInstance {
		if in.TrackID != 0 {
			return palette[in.TrackID%uint64(len(palette))]
		}
		return palette[i%len(palette)]
	}
	return palette[((in.Label%len(palette))+len(palette))%len(palette)]
}

// fillRect paints r (clipped to the frame) with c. Plain Go: OpenCV's
// rectangle costs ~12 µs a call through gocv, 1 ms for 100 boxes. The first
// row is painted by doubling copies and the others copied from it: memmove
// beats a loop storing three bytes a pixel several times over, and label
// backgrounds and box edges are a few hundred thousand pixels a frame.
func fillRect(frame []byte, w, h int, r image.Rectangle, c [3]uint8) {
	r = r.Intersect(image.Rect(0, 0, w, h))
	if r.Empty() {
		return
	}
	first := frame[(r.Min.Y*w+r.Min.X)*3 : (r.Min.Y*w+r.Max.X)*3]
	first[0], first[1], first[2] = c[0], c[1], c[2]
	for n := 3; n < len(first); n *= 2 {
		copy(first[n:], first[:n])
	}
	for y := r.Min.Y + 1; y < r.Max.Y; y++ {
		copy(frame[(y*w+r.Min.X)*3:(y*w+r.Max.X)*3], first)
	}
}

// strokeRect draws r's outline, t pixels thick, inside r.
func strokeRect(frame []byte, w, h int, r image.Rectangle, t int, c [3]uint8) {
	fillRect(frame, w, h, image.Rect(r.Min.X, r.Min.Y, r.Max.X, r.Min.Y+t), c)
	fillRect(frame, w, h, image.Rect(r.Min.X, r.Max.Y-t, r.Max.X, r.Max.Y), c)
	fillRect(frame, w, h, image.Rect(r.Min.X, r.Min.Y, r.Min.X+t, r.Max.Y), c)
	fillRect(frame, w, h, image.Rect(r.Max.X-t, r.Min.Y, r.Max.X, r.Max.Y), c)
}

func clamp01(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 1 {
		return 1
	}
	return v
}

// palette is a set of distinct, saturated colours (Tableau 20's darker
// half and friends) that stay readable over both dark and light scenes.
var palette = [][3]uint8{
	{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
	{140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
	{0, 128, 128}, {255, 215, 0}, {106, 61, 154}, {177, 89, 40}, {251, 154, 153},
	{178, 223, 138}, {166, 206, 227}, {253, 191, 111}, {202, 178, 214}, {255, 255, 153},
}

// blendMask blends colour c at opacity a/256 over the instance's pixels and,
// with contour, paints its boundary pixels solid: a set pixel is boundary
// when one of its 4-neighbours is not set (the region's border counts as
// outside). Only the mask's region is visited, within rows [top, bottom).
//
// Each mask row is walked as runs of set bytes, found a word or a SIMD
// IndexByte at a time rather than pixel by pixel, and a run's pixels are
// blended together (tint.blend). With contour, a run's interior pixels are
// boundary only where the row above or below has a zero, which IndexByte
// finds too; for the typical blob that is a few pixels at the run's ends.
func blendMask(frame []byte, w, top, bottom int, in *detection.Detection, c [3]uint8, a uint32, contour bool) {
	x0, y0 := max(in.Mask.X, 0), max(in.Mask.Y, top)
	x1, y1 := min(in.Mask.X+in.Mask.W, w), min(in.Mask.Y+in.Mask.H, bottom)
	if x1 <= x0 || y1 <= y0 {
		return
	}
	t := newTint(c, a)
	mw, mh := in.Mask.W, in.Mask.H
	mx0, mx1 := x0-in.Mask.X, x1-in.Mask.X // the visible columns, in mask coordinates
	for y := y0; y < y1; y++ {
		my := y - in.Mask.Y
		row := in.Mask.Bits[my*mw : (my+1)*mw]
		// px[3*(mx-mx0):] is the frame pixel under mask column mx.
		px := frame[(y*w+x0)*3 : (y*w+x1)*3]
		for x := mx0; x < mx1; {
			start := x + indexNotByte(row[x:mx1], 0)
			if start == mx1 {
				break
			}
			end := start + indexZero(row[start:mx1])
			x = end
			run := px[3*(start-mx0) : 3*(end-mx0)]
			switch {
			case !contour:
				t.blend(run)
			case my == 0 || my == mh-1:
				t.fill(run) // the region's top or bottom row: all boundary
			default:
				contourRun(&t, run, row, in.Mask.Bits[(my-1)*mw:my*mw], in.Mask.Bits[(my+1)*mw:(my+2)*mw], start, end)
			}
		}
	}
}

// contourRun draws run, the frame pixels under the set mask bytes
// row[start:end] (a maximal run within the visible columns), with up and
// down the mask rows above and below: boundary pixels solid, the others
// blended.
func contourRun(t *tint, run, row, up, down []byte, start, end int) {
	pix := func(x int) []byte { return run[3*(x-start) : 3*(x-start)+3] }
	// The run's ends are boundary when the mask (not just its visible part)
	// has a zero, or its border, beside them.
	lo, hi := start, end
	if start == 0 || row[start-1] == 0 {
		t.fill(pix(start))
		lo++
	}
	if hi > lo && (end == len(row) || row[end] == 0) {
		t.fill(pix(end - 1))
		hi--
	}
	// Between them left and right neighbours are set: a pixel is boundary
	// if the pixel above or below is not. Blend up to the next such pixel
	// in one go, then paint the stretch of boundary pixels there.
	for x := lo; x < hi; {
		e := x + indexZero(up[x:hi])
		e = x + indexZero(down[x:e])
		t.blend(run[3*(x-start) : 3*(e-start)])
		for x = e; x < hi && (up[x] == 0 || down[x] == 0); x++ {
			t.fill(pix(x))
		}
	}
}
