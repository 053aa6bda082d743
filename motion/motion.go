// Package motion says whether anything moves in a camera's picture, cheaply
// enough to run on every frame before the model: the scheduler runs the
// model only where the picture changed.
//
// It follows Frigate's improved motion detector (frigate/motion/
// improved_motion.py): the frame is scaled down to a small grey picture
// (FrameHeight rows), blurred, compared with a running-average background;
// pixels that differ by more than Threshold and are not under a mask
// polygon are motion, and connected groups of them at least ContourArea
// small pixels large are the moving regions. A change over most of the
// picture (lights switched on, the camera's exposure jumping) is not
// motion: the background is taken afresh instead.
//
// The package is pure Go: no cgo, no I/O, no clock reads. A Detector is
// one camera's and is not safe for concurrent use.
package motion

import (
	"errors"
	"fmt"
	"math"
)

// Config is one camera's motion settings. Zero fields take the defaults
// (Frigate's).
type Config struct {
	// FrameHeight is the height of the grey picture motion is measured on;
	// its width keeps the frame's aspect. Default 100.
	FrameHeight int `yaml:"frame_height" json:"frame_height"`
	// Threshold is the least grey-level difference (0-255) from the
	// background that counts as a moving pixel. Default 30.
	Threshold int `yaml:"threshold" json:"threshold"`
	// ContourArea is the least size, in pixels of the grey picture, of a
	// connected moving region. Default 10.
	ContourArea int `yaml:"contour_area" json:"contour_area"`
	// Alpha is how fast the background follows the picture (each frame
	// moves it this share of the way). Default 0.01.
	Alpha float64 `yaml:"frame_alpha" json:"frame_alpha"`
	// Lightning is the share of the picture above which a change is taken
	// for a change of light, not motion. Default 0.8.
	Lightning float64 `yaml:"lightning_threshold" json:"lightning_threshold"`
	// Mask polygons, [[x, y], ...] relative to the frame (0..1), are never
	// motion: timestamps, trees, a road outside the area of interest.
	Mask []Polygon `yaml:"mask" json:"mask"`
}

// Polygon is a closed polygon of relative frame coordinates (0..1).
type Polygon [][2]float64

// Contains is the even-odd point-in-polygon test.
func (p Polygon) Contains(x, y float64) bool {
	in := false
	for i, j := 0, len(p)-1; i < len(p); j, i = i, i+1 {
		xi, yi, xj, yj := p[i][0], p[i][1], p[j][0], p[j][1]
		if (yi > y) != (yj > y) && x < (xj-xi)*(y-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("invalid motion settings")

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.FrameHeight == 0 {
		c.FrameHeight = 100
	}
	if c.Threshold == 0 {
		c.Threshold = 30
	}
	if c.ContourArea == 0 {
		c.ContourArea = 10
	}
	if c.Alpha == 0 {
		c.Alpha = 0.01
	}
	if c.Lightning == 0 {
		c.Lightning = 0.8
	}
	return c
}

// Validate reports the first setting out of its range, naming it.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.FrameHeight < 8 || c.FrameHeight > 1080:
		return fmt.Errorf("%w: frame_height %d: want 8-1080", ErrConfig, c.FrameHeight)
	case c.Threshold < 1 || c.Threshold > 255:
		return fmt.Errorf("%w: threshold %d: want 1-255", ErrConfig, c.Threshold)
	case c.ContourArea < 1:
		return fmt.Errorf("%w: contour_area %d: want at least 1", ErrConfig, c.ContourArea)
	case !(c.Alpha > 0 && c.Alpha <= 1):
		return fmt.Errorf("%w: frame_alpha %v: want 0 < a <= 1", ErrConfig, c.Alpha)
	case !(c.Lightning > 0 && c.Lightning <= 1):
		return fmt.Errorf("%w: lightning_threshold %v: want 0 < t <= 1", ErrConfig, c.Lightning)
	}
	for i, p := range c.Mask {
		if len(p) < 3 {
			return fmt.Errorf("%w: mask %d has %d points: a polygon needs at least 3", ErrConfig, i, len(p))
		}
		for _, pt := range p {
			if !(pt[0] >= 0 && pt[0] <= 1 && pt[1] >= 0 && pt[1] <= 1) {
				return fmt.Errorf("%w: mask %d: point %v is outside the frame (coordinates are 0..1)", ErrConfig, i, pt)
			}
		}
	}
	return nil
}

// Result is what one frame's detection found.
type Result struct {
	// Moving says some region moved.
	Moving bool
	// Regions are the moving regions' boxes, x1 y1 x2 y2 in frame pixels.
	Regions [][4]float32
	// Share is the share of the (unmasked) picture that changed.
	Share float64
	// Lightning says the whole picture changed and the background was
	// taken afresh (not counted as motion).
	Lightning bool
}

// Detector measures motion on one camera's frames.
type Detector struct {
	cfg Config

	srcW, srcH int // frame size the tables are for
	w, h       int // grey picture
	xs, ys     []int
	masked     []bool // by grey pixel; nil: no mask
	open       int    // unmasked pixels

	grey, blur []uint8
	bg         []float32
	started    bool
	moving     []bool
	stack      []int32
	seen       []bool
}

// New returns a detector, or the Validate error.
func New(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Detector{cfg: cfg.withDefaults()}, nil
}

// Reset forgets the background: the next frame starts a new one (a
// reconnected camera may point elsewhere).
func (d *Detector) Reset() { d.started = false }

// resize prepares the tables for frames of w x h.
func (d *Detector) resize(fw, fh int) {
	d.srcW, d.srcH = fw, fh
	d.h = min(d.cfg.FrameHeight, fh)
	d.w = max(1, int(math.Round(float64(fw)*float64(d.h)/float64(fh))))
	d.xs = make([]int, d.w)
	d.ys = make([]int, d.h)
	// Sample a 2x2 block at the centre of each grey pixel's area: like a
	// bilinear resize, this is cheap at any frame size, and the blur
	// afterwards takes out most of the aliasing.
	for x := range d.xs {
		d.xs[x] = min(fw-2, max(0, int((float64(x)+0.5)*float64(fw)/float64(d.w))))
	}
	for y := range d.ys {
		d.ys[y] = min(fh-2, max(0, int((float64(y)+0.5)*float64(fh)/float64(d.h))))
	}
	n := d.w * d.h
	d.grey, d.blur = make([]uint8, n), make([]uint8, n)
	d.bg = make([]float32, n)
	d.moving = make([]bool, n)
	d.seen = make([]bool, n)
	d.masked, d.open = nil, n
	if len(d.cfg.Mask) > 0 {
		d.masked = make([]bool, n)
		d.open = 0
		for y := 0; y < d.h; y++ {
			for x := 0; x < d.w; x++ {
				cx, cy := (float64(x)+0.5)/float64(d.w), (float64(y)+0.5)/float64(d.h)
				for _, p := range d.cfg.Mask {
					if p.Contains(cx, cy) {
						d.masked[y*d.w+x] = true
						break
					}
				}
				if !d.masked[y*d.w+x] {
					d.open++
				}
			}
		}
	}
	d.started = false
}

// Detect measures one frame: rgb is w*h*3 bytes, R G B. The first frame
// (and the first after a size change or Reset) only starts the background
// and never moves.
func (d *Detector) Detect(rgb []byte, w, h int) (Result, error) {
	if w < 2 || h < 2 || len(rgb) < w*h*3 {
		return Result{}, fmt.Errorf("motion: frame %dx%d with %d bytes of RGB", w, h, len(rgb))
	}
	if w != d.srcW || h != d.srcH {
		d.resize(w, h)
	}
	d.scale(rgb, w)
	d.blur3()
	if !d.started {
		for i, v := range d.blur {
			d.bg[i] = float32(v)
		}
		d.started = true
		return Result{}, nil
	}
	thr := float32(d.cfg.Threshold)
	changed := 0
	for i, v := range d.blur {
		diff := float32(v) - d.bg[i]
		m := (diff > thr || diff < -thr) && (d.masked == nil || !d.masked[i])
		d.moving[i] = m
		if m {
			changed++
		}
	}
	var res Result
	if d.open > 0 {
		res.Share = float64(changed) / float64(d.open)
	}
	if res.Share > d.cfg.Lightning {
		for i, v := range d.blur {
			d.bg[i] = float32(v)
		}
		res.Lightning = true
		return res, nil
	}
	if changed > 0 {
		res.Regions = d.regions()
		res.Moving = len(res.Regions) > 0
	}
	a := float32(d.cfg.Alpha)
	for i, v := range d.blur {
		d.bg[i] += a * (float32(v) - d.bg[i])
	}
	return res, nil
}

// scale fills grey from the frame, each grey pixel the mean luma of a 2x2
// block (BT.601 weights in 8-bit fixed point).
func (d *Detector) scale(rgb []byte, fw int) {
	stride := fw * 3
	for y, sy := range d.ys {
		r0 := rgb[sy*stride : (sy+2)*stride]
		out := d.grey[y*d.w : (y+1)*d.w]
		for x, sx := range d.xs {
			o := sx * 3
			p, q := r0[o:o+6], r0[stride+o:stride+o+6]
			r := int(p[0]) + int(p[3]) + int(q[0]) + int(q[3])
			g := int(p[1]) + int(p[4]) + int(q[1]) + int(q[4])
			b := int(p[2]) + int(p[5]) + int(q[2]) + int(q[5])
			out[x] = uint8((77*r + 150*g + 29*b) >> 10)
		}
	}
}

// blur3 is a 3x3 box blur of grey into blur, edges clamped: camera noise
// and the sampling's aliasing would otherwise flicker above the threshold.
func (d *Detector) blur3() {
	w, h := d.w, d.h
	for y := 0; y < h; y++ {
		y0, y2 := max(0, y-1), min(h-1, y+1)
		for x := 0; x < w; x++ {
			x0, x2 := max(0, x-1), min(w-1, x+1)
			s := 0
			for yy := y0; yy <= y2; yy++ {
				row := d.grey[yy*w : yy*w+w]
				s += int(row[x0]) + int(row[x]) + int(row[x2])
			}
			// a clamped edge counts its border pixel twice: 9 samples always
			d.blur[y*w+x] = uint8(s / 9)
		}
	}
}

// regions groups moving pixels into 8-connected regions and returns the
// boxes of those of at least ContourArea pixels, in frame pixels.
func (d *Detector) regions() [][4]float32 {
	w, h := d.w, d.h
	clear(d.seen)
	sx, sy := float32(d.srcW)/float32(w), float32(d.srcH)/float32(h)
	var out [][4]float32
	for start, m := range d.moving {
		if !m || d.seen[start] {
			continue
		}
		d.seen[start] = true
		stack := append(d.stack[:0], int32(start))
		area := 0
		x1, y1, x2, y2 := w, h, -1, -1
		for len(stack) > 0 {
			i := int(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
			area++
			x, y := i%w, i/w
			x1, y1, x2, y2 = min(x1, x), min(y1, y), max(x2, x), max(y2, y)
			for dy := -1; dy <= 1; dy++ {
				ny := y + dy
				if ny < 0 || ny >= h {
					continue
				}
				for dx := -1; dx <= 1; dx++ {
					nx := x + dx
					if nx < 0 || nx >= w {
						continue
					}
					j := ny*w + nx
					if d.moving[j] && !d.seen[j] {
						d.seen[j] = true
						stack = append(stack, int32(j))
					}
				}
			}
		}
		d.stack = stack
		if area >= d.cfg.ContourArea {
			out = append(out, [4]float32{float32(x1) * sx, float32(y1) * sy, float32(x2+1) * sx, float32(y2+1) * sy})
		}
	}
	return out
}
