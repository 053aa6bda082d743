package events

import (
	"math"

	"github.com/htcstream/htcstream/detection"
)

// Zone is a named polygon of a camera, in coordinates relative to the
// frame: x and y from 0 (left, top) to 1 (right, bottom), so one zone
// fits every resolution of the camera. A track is in the zone when the
// bottom centre of its box (where an object stands) is inside.
type Zone [][2]float64

// contains reports whether p (relative coordinates) is inside z (even-odd
// rule).
func (z Zone) contains(x, y float64) bool {
	in := false
	for i, j := 0, len(z)-1; i < len(z); j, i = i, i+1 {
		xi, yi, xj, yj := z[i][0], z[i][1], z[j][0], z[j][1]
		if (yi > y) != (yj > y) && x < (xj-xi)*(y-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// maskShare is the share of a mask's pixels inside the zone, in a frame of
// w x h. A large mask is sampled on a grid of about 4096 points: the share
// is a threshold test, and a 1080p person's mask has 100 000 pixels.
func (z Zone) maskShare(m *detection.Mask, w, h int) float64 {
	if m.W <= 0 || m.H <= 0 || len(m.Bits) < m.W*m.H || w <= 0 || h <= 0 {
		return 0
	}
	step := max(1, int(math.Sqrt(float64(m.W*m.H)/4096)))
	inside, total := 0, 0
	for y := 0; y < m.H; y += step {
		row := m.Bits[y*m.W : (y+1)*m.W]
		fy := (float64(m.Y+y) + 0.5) / float64(h)
		for x := 0; x < m.W; x += step {
			if row[x] == 0 {
				continue
			}
			total++
			if z.contains((float64(m.X+x)+0.5)/float64(w), fy) {
				inside++
			}
		}
	}
	if total == 0 {
		return 0
	}
	return float64(inside) / float64(total)
}
