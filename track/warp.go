package track

import (
	"math"

	"github.com/htcstream/htcstream/detection"
)

// WarpMask moves a mask that was seen with box from to where box to puts
// the object: every point keeps its place relative to the box (scale +
// translate, nearest neighbour), the result clipped to a frame of
// frameW x frameH. A mask whose size does not change by half a pixel is
// only moved, sharing m.Bits when it stays inside the frame: most frames
// between two keyframes move an object more than they resize it, and the
// copy is the cost. An empty or degenerate input gives an empty mask.
func WarpMask(m detection.Mask, from, to [4]float32, frameW, frameH int) detection.Mask {
	if !maskOK(&m) || !validBox(from) || !validBox(to) || frameW <= 0 || frameH <= 0 {
		return detection.Mask{}
	}
	sx := float64(to[2]-to[0]) / float64(from[2]-from[0])
	sy := float64(to[3]-to[1]) / float64(from[3]-from[1])
	// the mask region's corners, carried by the box transform
	x0 := float64(to[0]) + (float64(m.X)-float64(from[0]))*sx
	y0 := float64(to[1]) + (float64(m.Y)-float64(from[1]))*sy
	w, h := float64(m.W)*sx, float64(m.H)*sy
	if math.Abs(w-float64(m.W)) < 0.5 && math.Abs(h-float64(m.H)) < 0.5 {
		return shiftMask(m, int(math.Round(x0)), int(math.Round(y0)), frameW, frameH)
	}
	nx0, ny0 := int(math.Round(x0)), int(math.Round(y0))
	nx1, ny1 := int(math.Round(x0+w)), int(math.Round(y0+h))
	cx0, cy0 := max(nx0, 0), max(ny0, 0)
	cx1, cy1 := min(nx1, frameW), min(ny1, frameH)
	if cx1 <= cx0 || cy1 <= cy0 {
		return detection.Mask{}
	}
	out := detection.Mask{X: cx0, Y: cy0, W: cx1 - cx0, H: cy1 - cy0}
	out.Bits = make([]byte, out.W*out.H)
	// source column of each output column, computed once
	cols := make([]int32, out.W)
	for i := range cols {
		sxp := (float64(cx0+i) + 0.5 - x0) / sx
		cols[i] = int32(min(m.W-1, max(0, int(sxp))))
	}
	for r := 0; r < out.H; r++ {
		syp := (float64(cy0+r) + 0.5 - y0) / sy
		src := m.Bits[min(m.H-1, max(0, int(syp)))*m.W:][:m.W]
		dst := out.Bits[r*out.W : (r+1)*out.W]
		for i, c := range cols {
			dst[i] = src[c]
		}
	}
	return out
}

// shiftMask moves m to (x, y), clipped to the frame.
func shiftMask(m detection.Mask, x, y, frameW, frameH int) detection.Mask {
	if x >= 0 && y >= 0 && x+m.W <= frameW && y+m.H <= frameH {
		return detection.Mask{X: x, Y: y, W: m.W, H: m.H, Bits: m.Bits}
	}
	cx0, cy0 := max(x, 0), max(y, 0)
	cx1, cy1 := min(x+m.W, frameW), min(y+m.H, frameH)
	if cx1 <= cx0 || cy1 <= cy0 {
		return detection.Mask{}
	}
	out := detection.Mask{X: cx0, Y: cy0, W: cx1 - cx0, H: cy1 - cy0}
	out.Bits = make([]byte, out.W*out.H)
	for r := 0; r < out.H; r++ {
		sr := cy0 + r - y
		copy(out.Bits[r*out.W:(r+1)*out.W], m.Bits[sr*m.W+(cx0-x):sr*m.W+(cx1-x)])
	}
	return out
}

// LerpBox is the box a share a of the way from b0 to b1.
func LerpBox(b0, b1 [4]float32, a float32) [4]float32 {
	var out [4]float32
	for i := range out {
		out[i] = b0[i] + (b1[i]-b0[i])*a
	}
	return out
}
