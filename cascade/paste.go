package cascade

import (
	"math"

	"github.com/htcstream/htcstream/detection"
)

// PasteMask returns the binary mask of one instance from prob, its size x
// size probability map over box (frame pixels). It samples prob bilinearly
// at every frame pixel centre, with zeros outside the map, exactly as
// mmdetection's _do_paste_mask does through grid_sample(align_corners=False),
// and sets pixels whose probability is at least thr. Like mmdetection on CPU
// it only visits the box's pixels plus a one-pixel margin: the region the
// returned detection.Mask covers.
func PasteMask(prob []float32, size int, box detection.Box, frameW, frameH int, thr float32) detection.Mask {
	if !box.Finite() || size <= 0 || len(prob) < size*size {
		return detection.Mask{}
	}
	x0 := max(0, int(math.Floor(float64(box.X1)))-1)
	y0 := max(0, int(math.Floor(float64(box.Y1)))-1)
	x1 := min(frameW, int(math.Ceil(float64(box.X2)))+1)
	y1 := min(frameH, int(math.Ceil(float64(box.Y2)))+1)
	bw := box.X2 - box.X1
	bh := box.Y2 - box.Y1
	if x1 <= x0 || y1 <= y0 || bw <= 0 || bh <= 0 {
		return detection.Mask{}
	}
	out := detection.Mask{X: x0, Y: y0, W: x1 - x0, H: y1 - y0, Bits: make([]byte, (x1-x0)*(y1-y0))}
	fs := float32(size)
	// Separable: each map row is first interpolated at every column of the
	// region (size rows x region width), then each region row blends two
	// of those — the same products, summed in the same order, as sampling
	// every pixel from four neighbours, at a quarter of the work.
	cols := make([]bilinear, x1-x0)
	for x := x0; x < x1; x++ {
		cols[x-x0] = bilinearTap((float32(x)+0.5-box.X1)/bw*fs-0.5, size)
	}
	rw := x1 - x0
	horiz := make([]float32, size*rw)
	for r := 0; r < size; r++ {
		src := prob[r*size : (r+1)*size]
		dst := horiz[r*rw : (r+1)*rw]
		for k, tx := range cols {
			dst[k] = tx.w0*src[tx.i0] + tx.w1*src[tx.i1]
		}
	}
	for y := y0; y < y1; y++ {
		ty := bilinearTap((float32(y)+0.5-box.Y1)/bh*fs-0.5, size)
		if ty.w0 == 0 && ty.w1 == 0 {
			continue
		}
		row := out.Bits[(y-y0)*out.W : (y-y0+1)*out.W]
		h0 := horiz[ty.i0*rw : (ty.i0+1)*rw]
		h1 := horiz[ty.i1*rw : (ty.i1+1)*rw]
		for k := range row {
			var v float32
			if ty.w0 != 0 {
				v += ty.w0 * h0[k]
			}
			if ty.w1 != 0 {
				v += ty.w1 * h1[k]
			}
			if v >= thr {
				row[k] = 1
			}
		}
	}
	return out
}

// bilinear is one axis of a bilinear sample: two neighbours and weights.
type bilinear struct {
	i0, i1 int
	w0, w1 float32
}

// bilinearTap returns the two neighbours of continuous index u in [0,size)
// and their weights; a neighbour outside the map gets weight zero
// (grid_sample's zero padding).
func bilinearTap(u float32, size int) bilinear {
	f := float32(math.Floor(float64(u)))
	i0 := int(f)
	w1 := u - f
	w0 := 1 - w1
	i1 := i0 + 1
	if i0 < 0 || i0 >= size {
		w0, i0 = 0, 0
	}
	if i1 < 0 || i1 >= size {
		w1, i1 = 0, 0
	}
	return bilinear{i0, i1, w0, w1}
}

// MeanMasks averages n probability maps of size x size laid out one after
// another in maps; where flipped[k] is set, map k is mirrored left-right
// first (a flipped view's mask). dst must hold size*size values.
func MeanMasks(maps []float32, size int, flipped []bool, dst []float32) {
	clear(dst)
	n := len(maps) / (size * size)
	for k := 0; k < n; k++ {
		m := maps[k*size*size : (k+1)*size*size]
		flip := k < len(flipped) && flipped[k]
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				sx := x
				if flip {
					sx = size - 1 - x
				}
				dst[y*size+x] += m[y*size+sx]
			}
		}
	}
	inv := 1 / float32(n)
	for i := range dst {
		dst[i] *= inv
	}
}
