package track

import (
	"math"

	"github.com/htcstream/htcstream/detection"
)

// boxIoU is intersection over union of two x1 y1 x2 y2 boxes; 0 for
// degenerate ones.
func boxIoU(a, b [4]float32) float64 {
	iw := min(a[2], b[2]) - max(a[0], b[0])
	ih := min(a[3], b[3]) - max(a[1], b[1])
	if iw <= 0 || ih <= 0 {
		return 0
	}
	inter := float64(iw) * float64(ih)
	u := boxArea(a) + boxArea(b) - inter
	if u <= 0 {
		return 0
	}
	return inter / u
}

func boxArea(b [4]float32) float64 {
	w, h := float64(b[2]-b[0]), float64(b[3]-b[1])
	if w <= 0 || h <= 0 {
		return 0
	}
	return w * h
}

func validBox(b [4]float32) bool {
	for _, v := range b {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return b[2] > b[0] && b[3] > b[1]
}

// area counts the mask's set pixels; 0 for a mask whose Bits do not cover
// W*H (treated as no mask rather than read out of range).
func maskArea(m *detection.Mask) int {
	if !maskOK(m) {
		return 0
	}
	n := 0
	for _, b := range m.Bits[:m.W*m.H] {
		if b != 0 {
			n++
		}
	}
	return n
}

// maskOK says whether m is a mask whose Bits cover its region.
func maskOK(m *detection.Mask) bool { return m.W > 0 && m.H > 0 && len(m.Bits) >= m.W*m.H }

// maskIoU is the IoU of a moved by (dx, dy) pixels and b, given their
// areas. Moving a track's last mask by its predicted displacement compares
// shapes where the object is expected now, not where it was.
func maskIoU(a *detection.Mask, areaA, dx, dy int, b *detection.Mask, areaB int) float64 {
	if areaA == 0 || areaB == 0 {
		return 0
	}
	ax, ay := a.X+dx, a.Y+dy
	x0, x1 := max(ax, b.X), min(ax+a.W, b.X+b.W)
	y0, y1 := max(ay, b.Y), min(ay+a.H, b.Y+b.H)
	inter := 0
	for y := y0; y < y1; y++ {
		ra := a.Bits[(y-ay)*a.W+(x0-ax) : (y-ay)*a.W+(x1-ax)]
		rb := b.Bits[(y-b.Y)*b.W+(x0-b.X) : (y-b.Y)*b.W+(x1-b.X)]
		for i, v := range ra {
			if v != 0 && rb[i] != 0 {
				inter++
			}
		}
	}
	return float64(inter) / float64(areaA+areaB-inter)
}
