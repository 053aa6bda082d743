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

// BlendMasks is the shape a share a of the way from m0 to m1 (both in
// frame pixels, already moved to the same box): each pixel's signed
// distance to either outline (positive inside, chamfer 3-4), weighed by
// time, inside where the sum is. A nearest keyframe's mask jumps halfway
// between two keyframes; the blend turns a rotating or deforming shape
// gradually. An empty side gives the other.
//
// Only the pixels where the two masks disagree are decided by the
// distances, and those are measured on a grid of at most about
// blendSide cells a side: a 1080p person's blend costs a grid of 64 x 35
// cells, not its 120 x 220 pixels four times over.
func BlendMasks(m0, m1 detection.Mask, a float32) detection.Mask {
	if !maskOK(&m1) || a <= 0 {
		return m0
	}
	if !maskOK(&m0) || a >= 1 {
		return m1
	}
	x0, y0 := min(m0.X, m1.X), min(m0.Y, m1.Y)
	x1, y1 := max(m0.X+m0.W, m1.X+m1.W), max(m0.Y+m0.H, m1.Y+m1.H)
	w, h := x1-x0, y1-y0
	k := max(1, (max(w, h)+blendSide-1)/blendSide)
	// the grid: a cell every k pixels, a cell of margin all round
	gw, gh := (w+k-1)/k+2, (h+k-1)/k+2
	s0 := signedDistance(sampleMask(m0, x0, y0, k, gw, gh), gw, gh)
	s1 := signedDistance(sampleMask(m1, x0, y0, k, gw, gh), gw, gh)
	out := detection.Mask{X: x0, Y: y0, W: w, H: h, Bits: make([]byte, w*h)}
	// Row by row, both masks laid out on the union's row as 0/1: what
	// they agree on is copied, and the grid decides the rest (a pixel
	// fetch with its bounds checks per mask made this 1.6x slower:
	// BenchmarkBlendMasks 178 -> 111 us, min of 5, the same bits out).
	other := make([]byte, w)
	for y := range h {
		o := out.Bits[y*w : (y+1)*w]
		putRow(o, &m0, x0, y0+y)
		clear(other)
		putRow(other, &m1, x0, y0+y)
		gy := (y/k + 1) * gw
		for x, b1 := range other {
			if o[x] == b1 {
				continue
			}
			g := gy + x/k + 1
			// a tie (halfway, as far from both outlines) is inside: one
			// of the two has the pixel
			if (1-a)*float32(s0[g])+a*float32(s1[g]) >= 0 {
				o[x] = 1
			} else {
				o[x] = 0
			}
		}
	}
	return trimMask(out)
}

// putRow writes frame row y of m into dst, which starts at frame column
// x0, as 0/1; dst's pixels outside m are left as they are.
func putRow(dst []byte, m *detection.Mask, x0, y int) {
	r := y - m.Y
	if r < 0 || r >= m.H {
		return
	}
	row := m.Bits[r*m.W : (r+1)*m.W]
	d := dst[m.X-x0:][:len(row)]
	for i, v := range row {
		var b byte // a set instruction, not a branch at every edge pixel
		if v != 0 {
			b = 1
		}
		d[i] = b
	}
}

// blendSide bounds BlendMasks' grid, in cells a side.
const blendSide = 64

func bitAt(m *detection.Mask, x, y int) byte {
	x, y = x-m.X, y-m.Y
	if x < 0 || y < 0 || x >= m.W || y >= m.H || m.Bits[y*m.W+x] == 0 {
		return 0
	}
	return 1
}

// sampleMask is m on BlendMasks' grid: cell (i, j) (past the margin)
// takes the pixel at the centre of the k x k pixels it covers from
// (x0, y0).
func sampleMask(m detection.Mask, x0, y0, k, gw, gh int) []byte {
	g := make([]byte, gw*gh)
	for j := 1; j < gh-1; j++ {
		for i := 1; i < gw-1; i++ {
			g[j*gw+i] = bitAt(&m, x0+(i-1)*k+k/2, y0+(j-1)*k+k/2)
		}
	}
	return g
}

// signedDistance is the signed chamfer distance of a w x h grid of bits
// whose border is 0: inside, the distance to the nearest cell outside;
// outside, minus the distance to the nearest cell inside. Both distances
// go in one pair of passes, the border sparing every bound check.
func signedDistance(bits []byte, w, h int) []int32 {
	const far = math.MaxInt32 / 4
	in := make([]int32, w*h)  // distance to outside; 0 outside
	out := make([]int32, w*h) // distance to inside; 0 inside
	for i, v := range bits {
		if v != 0 {
			in[i] = far
		} else {
			out[i] = far
		}
	}
	for y := 1; y < h-1; y++ {
		for i := y*w + 1; i < y*w+w-1; i++ {
			in[i] = min(in[i], in[i-1]+3, in[i-w]+3, in[i-w-1]+4, in[i-w+1]+4)
			out[i] = min(out[i], out[i-1]+3, out[i-w]+3, out[i-w-1]+4, out[i-w+1]+4)
		}
	}
	for y := h - 2; y >= 1; y-- {
		for i := y*w + w - 2; i >= y*w+1; i-- {
			in[i] = min(in[i], in[i+1]+3, in[i+w]+3, in[i+w+1]+4, in[i+w-1]+4)
			out[i] = min(out[i], out[i+1]+3, out[i+w]+3, out[i+w+1]+4, out[i+w-1]+4)
		}
	}
	for i := range in {
		in[i] -= out[i] // one of the two is 0
	}
	return in
}

// trimMask crops a mask to its set pixels (empty: no mask).
func trimMask(m detection.Mask) detection.Mask {
	c0, r0, c1, r1 := m.W, m.H, -1, -1
	for r := 0; r < m.H; r++ {
		// from each end to the first set pixel: a row's inside is not read
		row := m.Bits[r*m.W : (r+1)*m.W]
		first := 0
		for first < len(row) && row[first] == 0 {
			first++
		}
		if first == len(row) {
			continue
		}
		last := len(row) - 1
		for row[last] == 0 {
			last--
		}
		c0, r0, c1, r1 = min(c0, first), min(r0, r), max(c1, last), max(r1, r)
	}
	if c1 < 0 {
		return detection.Mask{}
	}
	out := detection.Mask{X: m.X + c0, Y: m.Y + r0, W: c1 - c0 + 1, H: r1 - r0 + 1}
	out.Bits = make([]byte, out.W*out.H)
	for r := range out.H {
		copy(out.Bits[r*out.W:(r+1)*out.W], m.Bits[(r0+r)*m.W+c0:])
	}
	return out
}
