package coco

import (
	"fmt"
	"math"
)

// EncodeRegion encodes a mask stored for a region of a frame — w*h values
// row by row in bits for frame pixels (x+i, y+j), non-zero = inside — as the
// COCO RLE of the whole fw x fh frame, without making the full-frame mask: COCO reads the mask
// column by column, so the columns left and right of the region are one
// run of zeros, and each column of the region is its zeros above, its own
// pixels, its zeros below. The runs are those coco.Encode gives for the
// full mask.
func EncodeRegion(x, y, w, h int, bits []byte, fw, fh int) (RLE, error) {
	m := struct {
		X, Y, W, H int
		Bits       []byte
	}{x, y, w, h, bits}
	var counts []uint32
	switch {
	case m.W < 0 || m.H < 0:
		return RLE{}, fmt.Errorf("mask region has negative size %dx%d", m.W, m.H)
	case len(m.Bits) != m.W*m.H:
		return RLE{}, fmt.Errorf("mask region %dx%d has %d values, want %d", m.W, m.H, len(m.Bits), m.W*m.H)
	case fw <= 0 || fh <= 0:
		return RLE{}, fmt.Errorf("frame size %dx%d cannot hold a mask", fw, fh)
	case uint64(fw)*uint64(fh) > math.MaxUint32:
		return RLE{}, fmt.Errorf("frame %dx%d has more pixels than COCO RLE counts hold", fw, fh)
	}
	x0, x1 := min(max(m.X, 0), fw), min(max(m.X+m.W, 0), fw)
	y0, y1 := min(max(m.Y, 0), fh), min(max(m.Y+m.H, 0), fh)
	if x0 >= x1 || y0 >= y1 {
		return RLE{Size: [2]int{fh, fw}, Counts: []uint32{uint32(fw * fh)}}, nil
	}
	var run uint32
	fg := false
	zeros := func(n int) {
		if n == 0 {
			return
		}
		if fg {
			counts = append(counts, run)
			run, fg = 0, false
		}
		run += uint32(n)
	}
	zeros(x0 * fh)
	for x := x0; x < x1; x++ {
		zeros(y0)
		i := (y0-m.Y)*m.W + (x - m.X)
		for y := y0; y < y1; y++ {
			if v := m.Bits[i] != 0; v != fg {
				counts = append(counts, run)
				run, fg = 0, v
			}
			run++
			i += m.W
		}
		zeros(fh - y1)
	}
	zeros((fw - x1) * fh)
	return RLE{Size: [2]int{fh, fw}, Counts: append(counts, run)}, nil
}
