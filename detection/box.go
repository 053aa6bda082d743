package detection

import "math"

// Box is an axis-aligned box in pixels, x1,y1 inclusive corner to x2,y2, with
// no +1 in widths (mmdetection 2.x, torchvision).
type Box struct {
	X1, Y1, X2, Y2 float32
}

// Width and Height may be zero or negative for degenerate boxes.
func (b Box) Width() float32  { return b.X2 - b.X1 }
func (b Box) Height() float32 { return b.Y2 - b.Y1 }

// Area is zero for degenerate boxes.
func (b Box) Area() float32 {
	w, h := b.Width(), b.Height()
	if w <= 0 || h <= 0 {
		return 0
	}
	return w * h
}

// XYXY is the box as the array x1, y1, x2, y2 (the JSON lines' and events'
// "box").
func (b Box) XYXY() [4]float32 { return [4]float32{b.X1, b.Y1, b.X2, b.Y2} }

// IoU is intersection over union; zero when the union is empty.
func IoU(a, b Box) float32 {
	iw := min(a.X2, b.X2) - max(a.X1, b.X1)
	ih := min(a.Y2, b.Y2) - max(a.Y1, b.Y1)
	if iw <= 0 || ih <= 0 {
		return 0
	}
	inter := iw * ih
	union := a.Area() + b.Area() - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// Clip limits the box to [0,w] x [0,h], as mmdetection's decoders clamp to
// the image shape.
func (b Box) Clip(w, h float32) Box {
	return Box{clamp(b.X1, 0, w), clamp(b.Y1, 0, h), clamp(b.X2, 0, w), clamp(b.Y2, 0, h)}
}

// Scale multiplies every coordinate (x by sx, y by sy).
func (b Box) Scale(sx, sy float32) Box {
	return Box{b.X1 * sx, b.Y1 * sy, b.X2 * sx, b.Y2 * sy}
}

// FlipX mirrors the box in an image of width w (mmdetection's bbox_flip,
// horizontal).
func (b Box) FlipX(w float32) Box {
	return Box{w - b.X2, b.Y1, w - b.X1, b.Y2}
}

// Finite reports whether every coordinate is a number: a broken graph can
// emit NaN or Inf, which must never reach NMS or drawing.
func (b Box) Finite() bool {
	for _, v := range [4]float32{b.X1, b.Y1, b.X2, b.Y2} {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}

func clamp(v, lo, hi float32) float32 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}
