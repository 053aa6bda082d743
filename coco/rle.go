// Package coco holds COCO's mask format and evaluation in pure Go: run-length
// encoded masks bit for bit as pycocotools' maskApi.c makes them, and
// COCOeval's box and mask AP/AR for the bbox and segm IoU types.
//
// The numbers must be the ones pycocotools prints for the same files, since
// they are compared with published results; so the code follows maskApi.c
// and cocoeval.py step by step, rounding and quirks included, and the
// comments say where a choice was made to follow them.
package coco

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// RLE is a binary mask as COCO run-length encodes it: Counts are the lengths
// of alternating runs of 0s and 1s over the mask read in column-major
// (Fortran) order, i.e. down each column from the left, starting with a run
// of zeros that may be empty. Size is [height, width], as COCO writes it.
type RLE struct {
	Size   [2]int
	Counts []uint32
}

// ErrBadRLE is wrapped by every error about malformed run lengths: a
// compressed string that does not decode, counts that do not cover the mask,
// or sizes that disagree.
var ErrBadRLE = errors.New("coco: malformed RLE")

// Height is the mask's height in pixels.
func (r RLE) Height() int { return r.Size[0] }

// Width is the mask's width in pixels.
func (r RLE) Width() int { return r.Size[1] }

// Validate reports whether the size is non-negative and the counts cover the
// mask exactly, which pycocotools assumes without checking (its decoder
// writes past the buffer otherwise).
func (r RLE) Validate() error {
	h, w := r.Size[0], r.Size[1]
	if h < 0 || w < 0 {
		return fmt.Errorf("%w: negative size [%d %d]", ErrBadRLE, h, w)
	}
	var sum uint64
	for _, c := range r.Counts {
		sum += uint64(c)
	}
	if sum != uint64(h)*uint64(w) {
		return fmt.Errorf("%w: counts sum to %d, size [%d %d] has %d pixels", ErrBadRLE, sum, h, w, uint64(h)*uint64(w))
	}
	return nil
}

// maxPixels bounds h*w because maskApi.c keeps pixel indices in a 32-bit
// uint; larger masks would silently wrap there.
const maxPixels = math.MaxUint32

func checkSize(h, w int) error {
	if h < 0 || w < 0 {
		return fmt.Errorf("%w: negative size [%d %d]", ErrBadRLE, h, w)
	}
	if uint64(h)*uint64(w) > maxPixels {
		return fmt.Errorf("%w: size [%d %d] has more than 2^32-1 pixels", ErrBadRLE, h, w)
	}
	return nil
}

// Encode run-length encodes a mask of w*h bytes stored row by row
// (mask[y*w+x], the layout of image.Gray), any non-zero byte being
// foreground. The runs follow pycocotools' rleEncode, which reads the mask in
// column-major order.
//
// pycocotools starts a new run at every change of byte value, so a mask
// holding 1s and 2s would get runs its decoder reads as alternating 0/1;
// treating every non-zero byte as 1 is what a caller means.
func Encode(mask []byte, w, h int) (RLE, error) {
	if err := checkSize(h, w); err != nil {
		return RLE{}, fmt.Errorf("encode: %w", err)
	}
	if len(mask) != w*h {
		return RLE{}, fmt.Errorf("encode: mask has %d bytes, want %d*%d = %d", len(mask), w, h, w*h)
	}
	counts := make([]uint32, 0, 8)
	var run uint32
	fg := false
	for x := 0; x < w; x++ {
		for y := 0; y < h; y++ {
			v := mask[y*w+x] != 0
			if v != fg {
				counts = append(counts, run)
				run = 0
				fg = v
			}
			run++
		}
	}
	counts = append(counts, run)
	return RLE{Size: [2]int{h, w}, Counts: counts}, nil
}

// Decode returns the mask as w*h bytes row by row (mask[y*w+x]), 1 for
// foreground and 0 elsewhere.
func (r RLE) Decode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	h, w := r.Size[0], r.Size[1]
	mask := make([]byte, h*w)
	var v byte
	i := 0 // column-major pixel index
	for _, c := range r.Counts {
		if v == 1 {
			for k := 0; k < int(c); k++ {
				p := i + k
				mask[(p%h)*w+p/h] = 1
			}
		}
		i += int(c)
		v ^= 1
	}
	return mask, nil
}

// Area is the number of foreground pixels (rleArea).
func (r RLE) Area() uint64 {
	var a uint64
	for j := 1; j < len(r.Counts); j += 2 {
		a += uint64(r.Counts[j])
	}
	return a
}

// ToBBox returns the mask's bounding box [x, y, w, h] as rleToBbox computes
// it: from the first and last pixel of each run of ones, widened to the full
// height whenever a run wraps from one column into the next. An empty mask
// gives [0 0 0 0].
func (r RLE) ToBBox() [4]float64 {
	// uint32 arithmetic as in the C code, which it must match bit for bit.
	h, w := uint32(r.Size[0]), uint32(r.Size[1])
	m := len(r.Counts) / 2 * 2 // a trailing run of zeros adds nothing
	if m == 0 || h == 0 {
		return [4]float64{}
	}
	xs, ys, xe, ye := w, h, uint32(0), uint32(0)
	var cc, xp uint32
	for j := 0; j < m; j++ {
		cc += r.Counts[j]
		t := cc - uint32(j%2)
		y := t % h
		x := (t - y) / h
		if j%2 == 0 {
			xp = x
		} else if xp < x {
			ys, ye = 0, h-1
		}
		xs, xe = min(xs, x), max(xe, x)
		ys, ye = min(ys, y), max(ye, y)
	}
	return [4]float64{float64(xs), float64(ys), float64(xe - xs + 1), float64(ye - ys + 1)}
}

// CountsString returns the counts in COCO's compressed string form
// (rleToString): from the fourth count on each is replaced by its difference
// to the count two places before (runs of one kind have similar lengths),
// then every value is written like signed LEB128 but with 5 payload bits per
// character, 0x20 meaning "more follows", offset by 48 into printable ASCII.
func (r RLE) CountsString() string {
	s := make([]byte, 0, len(r.Counts)*2)
	for i, c := range r.Counts {
		x := int64(c)
		if i > 2 {
			x -= int64(r.Counts[i-2])
		}
		for more := true; more; {
			ch := byte(x & 0x1f)
			x >>= 5 // arithmetic, as on the C code's long
			if ch&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				ch |= 0x20
			}
			s = append(s, ch+48)
		}
	}
	return string(s)
}

// maxGroups bounds the characters of one value: 7 groups of 5 bits already
// hold any difference of two uint32 counts; more is not a valid string.
const maxGroups = 7

// ParseCounts decodes COCO's compressed string form (rleFrString) into an
// RLE of the given size. Unlike the C code it rejects what would make it read
// past the string or wrap a count, and counts that do not cover h*w pixels.
func ParseCounts(s string, h, w int) (RLE, error) {
	if err := checkSize(h, w); err != nil {
		return RLE{}, err
	}
	counts := make([]uint32, 0, len(s)/2+1)
	for p := 0; p < len(s); {
		var x int64
		k := 0
		for more := true; more; {
			if p >= len(s) {
				return RLE{}, fmt.Errorf("%w: string ends inside a count", ErrBadRLE)
			}
			if k == maxGroups {
				return RLE{}, fmt.Errorf("%w: count at byte %d is longer than %d characters", ErrBadRLE, p, maxGroups)
			}
			c := int64(s[p]) - 48
			if c < 0 || c > 63 {
				return RLE{}, fmt.Errorf("%w: invalid character %q at byte %d", ErrBadRLE, s[p], p)
			}
			x |= (c & 0x1f) << (5 * k)
			more = c&0x20 != 0
			p++
			k++
			if !more && c&0x10 != 0 {
				x |= -1 << (5 * k) // sign-extend
			}
		}
		if m := len(counts); m > 2 {
			x += int64(counts[m-2])
		}
		if x < 0 || x > math.MaxUint32 {
			return RLE{}, fmt.Errorf("%w: count %d out of range at byte %d", ErrBadRLE, x, p)
		}
		counts = append(counts, uint32(x))
	}
	r := RLE{Size: [2]int{h, w}, Counts: counts}
	if err := r.Validate(); err != nil {
		return RLE{}, err
	}
	return r, nil
}

// maxCoord bounds polygon coordinates: maskApi.c casts them, times 5, to a
// 32-bit int, which is undefined beyond its range; no image is that large.
const maxCoord = 1 << 26

// FromPolygon rasterises one polygon [x0, y0, x1, y1, ...] in pixel
// coordinates exactly as pycocotools' rleFrPoly does, so areas and IoUs agree
// with it: the vertices are snapped to a grid 5 times finer, the boundary is
// traced densely on that grid, and a pixel column gets a boundary point where
// the traced boundary crosses the pixel centre's vertical line.
func FromPolygon(xy []float64, h, w int) (RLE, error) {
	if err := checkSize(h, w); err != nil {
		return RLE{}, fmt.Errorf("polygon: %w", err)
	}
	if len(xy) < 2 || len(xy)%2 != 0 {
		return RLE{}, fmt.Errorf("polygon: %d coordinates, want a non-zero even number", len(xy))
	}
	for i, v := range xy {
		if math.IsNaN(v) || math.Abs(v) > maxCoord {
			return RLE{}, fmt.Errorf("polygon: coordinate %d is %v, outside ±%d", i, v, maxCoord)
		}
	}
	const scale = 5.0
	k := len(xy) / 2
	x := make([]int, k+1)
	y := make([]int, k+1)
	for j := 0; j < k; j++ {
		// int() truncates toward zero like C's (int) cast; floor would move
		// points that lie left of or above the image.
		x[j] = int(float64(scale*xy[2*j]) + .5)
		y[j] = int(float64(scale*xy[2*j+1]) + .5)
	}
	x[k], y[k] = x[0], y[0]

	n := 0
	for j := 0; j < k; j++ {
		n += max(absInt(x[j]-x[j+1]), absInt(y[j]-y[j+1])) + 1
	}
	u := make([]int, 0, n)
	v := make([]int, 0, n)
	for j := 0; j < k; j++ {
		xs, xe, ys, ye := x[j], x[j+1], y[j], y[j+1]
		dx, dy := absInt(xe-xs), absInt(ys-ye)
		flip := (dx >= dy && xs > xe) || (dx < dy && ys > ye)
		if flip {
			xs, xe = xe, xs
			ys, ye = ye, ys
		}
		if dx >= dy {
			// dx == dy == 0 (a repeated vertex) is 0/0 in C; that point's v
			// is never read, because its u equals both neighbours' u.
			var s float64
			if dx > 0 {
				s = float64(ye-ys) / float64(dx)
			}
			for d := 0; d <= dx; d++ {
				t := d
				if flip {
					t = dx - d
				}
				u = append(u, t+xs)
				// The explicit conversions keep Go from fusing into an FMA,
				// whose different rounding could move a point.
				v = append(v, int(float64(float64(ys)+float64(s*float64(t)))+.5))
			}
		} else {
			s := float64(xe-xs) / float64(dy)
			for d := 0; d <= dy; d++ {
				t := d
				if flip {
					t = dy - d
				}
				v = append(v, t+ys)
				u = append(u, int(float64(float64(xs)+float64(s*float64(t)))+.5))
			}
		}
	}

	// Keep the points where the boundary steps into another column whose
	// centre lies on the coarse grid, and turn them into pixel indices.
	a := make([]uint32, 0, len(u)/int(scale)+2)
	for j := 1; j < len(u); j++ {
		if u[j] == u[j-1] {
			continue
		}
		xd := float64(u[j] - 1)
		if u[j] < u[j-1] {
			xd = float64(u[j])
		}
		xd = float64((xd+.5)/scale) - .5
		if math.Floor(xd) != xd || xd < 0 || xd > float64(w-1) {
			continue
		}
		yd := float64(v[j-1])
		if v[j] < v[j-1] {
			yd = float64(v[j])
		}
		yd = float64((yd+.5)/scale) - .5
		if yd < 0 {
			yd = 0
		} else if yd > float64(h) {
			yd = float64(h)
		}
		yd = math.Ceil(yd)
		a = append(a, uint32(int(xd)*h+int(yd)))
	}
	a = append(a, uint32(h*w))
	slices.Sort(a)

	// Differences of consecutive boundary indices are the runs; two boundary
	// points on one pixel cancel, so an empty run folds the next run into
	// the previous one.
	var p uint32
	for j, t := range a {
		a[j] -= p
		p = t
	}
	b := make([]uint32, 0, len(a))
	b = append(b, a[0])
	for j := 1; j < len(a); {
		if a[j] > 0 {
			b = append(b, a[j])
			j++
			continue
		}
		j++
		if j < len(a) {
			b[len(b)-1] += a[j]
			j++
		}
	}
	return RLE{Size: [2]int{h, w}, Counts: b}, nil
}

// FromBBox rasterises a box [x, y, w, h] as rleFrBbox does: as the polygon
// of its four corners.
func FromBBox(bb [4]float64, h, w int) (RLE, error) {
	xs, ys := bb[0], bb[1]
	xe, ye := xs+bb[2], ys+bb[3]
	return FromPolygon([]float64{xs, ys, xs, ye, xe, ye, xe, ys}, h, w)
}

// FromPolygons rasterises each polygon and unites them, as COCO.annToRLE
// does for an annotation made of several polygons.
func FromPolygons(polys [][]float64, h, w int) (RLE, error) {
	if len(polys) == 0 {
		return RLE{}, errors.New("polygons: empty list")
	}
	rles := make([]RLE, len(polys))
	for i, p := range polys {
		r, err := FromPolygon(p, h, w)
		if err != nil {
			return RLE{}, fmt.Errorf("polygon %d: %w", i, err)
		}
		rles[i] = r
	}
	return Merge(rles, false)
}

// Merge unites (or, with intersect, intersects) masks of one size, walking
// their runs as rleMerge does.
func Merge(rles []RLE, intersect bool) (RLE, error) {
	if len(rles) == 0 {
		return RLE{}, errors.New("merge: no masks")
	}
	for i, r := range rles {
		if r.Size != rles[0].Size {
			return RLE{}, fmt.Errorf("merge: %w: mask %d is %v, mask 0 is %v", ErrBadRLE, i, r.Size, rles[0].Size)
		}
		if len(r.Counts) == 0 {
			return RLE{}, fmt.Errorf("merge: %w: mask %d has no counts", ErrBadRLE, i)
		}
	}
	cnts := append([]uint32(nil), rles[0].Counts...)
	for _, B := range rles[1:] {
		A := cnts
		cnts = make([]uint32, 0, len(A)+len(B.Counts))
		ca, cb := A[0], B.Counts[0]
		var va, vb, v bool
		a, b := 1, 1
		var cc uint32
		for ct := uint32(1); ct > 0; {
			c := min(ca, cb)
			cc += c
			ct = 0
			ca -= c
			if ca == 0 && a < len(A) {
				ca = A[a]
				a++
				va = !va
			}
			ct += ca
			cb -= c
			if cb == 0 && b < len(B.Counts) {
				cb = B.Counts[b]
				b++
				vb = !vb
			}
			ct += cb
			vp := v
			if intersect {
				v = va && vb
			} else {
				v = va || vb
			}
			if v != vp || ct == 0 {
				cnts = append(cnts, cc)
				cc = 0
			}
		}
	}
	return RLE{Size: rles[0].Size, Counts: cnts}, nil
}

// IoU returns the mask IoU of every detection with every ground truth,
// indexed [detection][ground truth], computed on the runs without decoding,
// as rleIou does. When iscrowd[g] is set the value is intersection over the
// detection's area: a detection inside a crowd region scores 1 however large
// the region is. iscrowd may be nil (no crowds); otherwise it has one entry
// per ground truth. Masks of different sizes are an error (pycocotools
// returns -1 for them when their boxes overlap, 0 otherwise).
func IoU(dt, gt []RLE, iscrowd []bool) ([][]float64, error) {
	if iscrowd != nil && len(iscrowd) != len(gt) {
		return nil, fmt.Errorf("iou: %d iscrowd flags for %d ground truths", len(iscrowd), len(gt))
	}
	if len(dt) > 0 {
		for i, r := range dt {
			if r.Size != dt[0].Size {
				return nil, fmt.Errorf("iou: %w: detection %d is %v, detection 0 is %v", ErrBadRLE, i, r.Size, dt[0].Size)
			}
		}
		for i, r := range gt {
			if r.Size != dt[0].Size {
				return nil, fmt.Errorf("iou: %w: ground truth %d is %v, the detections are %v", ErrBadRLE, i, r.Size, dt[0].Size)
			}
		}
	}
	dm := make([]mask, len(dt))
	for i, r := range dt {
		dm[i] = newMask(r)
	}
	gm := make([]mask, len(gt))
	for i, r := range gt {
		gm[i] = newMask(r)
	}
	out := make([][]float64, len(dt))
	for d := range dt {
		out[d] = make([]float64, len(gt))
		for g := range gt {
			crowd := iscrowd != nil && iscrowd[g]
			o, err := maskIoU(dm[d], gm[g], crowd)
			if err != nil {
				return nil, fmt.Errorf("iou of detection %d and ground truth %d: %w", d, g, err)
			}
			out[d][g] = o
		}
	}
	return out, nil
}

// mask is an RLE with the box and area that IoU needs for every pair, so
// they are computed once per mask.
type mask struct {
	rle  RLE
	box  [4]float64
	area uint64
}

func newMask(r RLE) mask { return mask{rle: r, box: r.ToBBox(), area: r.Area()} }

// maskIoU is rleIou for one pair: only masks whose boxes overlap are
// compared run by run, which is also what makes empty masks score 0.
func maskIoU(d, g mask, crowd bool) (float64, error) {
	if boxIoU(d.box, g.box, crowd) <= 0 {
		return 0, nil
	}
	if d.rle.Size != g.rle.Size {
		return 0, fmt.Errorf("%w: detection is %v, ground truth is %v", ErrBadRLE, d.rle.Size, g.rle.Size)
	}
	A, B := d.rle.Counts, g.rle.Counts
	if len(A) == 0 || len(B) == 0 {
		return 0, nil
	}
	ca, cb := A[0], B[0]
	var va, vb bool
	a, b := 1, 1
	var inter, union uint64
	for ct := uint32(1); ct > 0; {
		c := min(ca, cb)
		if va || vb {
			union += uint64(c)
			if va && vb {
				inter += uint64(c)
			}
		}
		ct = 0
		ca -= c
		if ca == 0 && a < len(A) {
			ca = A[a]
			a++
			va = !va
		}
		ct += ca
		cb -= c
		if cb == 0 && b < len(B) {
			cb = B[b]
			b++
			vb = !vb
		}
		ct += cb
	}
	if inter == 0 {
		return 0, nil
	}
	if crowd {
		union = d.area
	}
	return float64(inter) / float64(union), nil
}

// BoxIoU returns the IoU of every detection box with every ground-truth box,
// boxes being [x, y, w, h], indexed [detection][ground truth], as bbIou
// computes it; for a crowd ground truth the union is the detection's area.
// iscrowd may be nil (no crowds); otherwise it has one entry per ground
// truth.
func BoxIoU(dt, gt [][4]float64, iscrowd []bool) ([][]float64, error) {
	if iscrowd != nil && len(iscrowd) != len(gt) {
		return nil, fmt.Errorf("box iou: %d iscrowd flags for %d ground truths", len(iscrowd), len(gt))
	}
	out := make([][]float64, len(dt))
	for d := range dt {
		out[d] = make([]float64, len(gt))
		for g := range gt {
			out[d][g] = boxIoU(dt[d], gt[g], iscrowd != nil && iscrowd[g])
		}
	}
	return out, nil
}

func boxIoU(D, G [4]float64, crowd bool) float64 {
	w := math.Min(D[2]+D[0], G[2]+G[0]) - math.Max(D[0], G[0])
	if w <= 0 {
		return 0
	}
	h := math.Min(D[3]+D[1], G[3]+G[1]) - math.Max(D[1], G[1])
	if h <= 0 {
		return 0
	}
	i := w * h
	da := D[2] * D[3]
	u := da + G[2]*G[3] - i
	if crowd {
		u = da
	}
	return i / u
}

func absInt(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
