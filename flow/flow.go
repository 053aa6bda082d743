// Package flow moves objects from frame to frame by sparse optical flow on
// each object's own region: corners found on the object (OpenCV's
// goodFeaturesToTrack, kept where its mask is) are followed into the next
// frame by pyramidal Lucas-Kanade, and the object moves by their median
// displacement. It is the "flow" way of propagating detections to the
// frames the model does not see (the other way moves the box as the
// tracker's Kalman filter predicts).
//
// Only the regions are looked at, each scaled down to less than twice
// regionSide pixels a side, so the cost is per object, not per frame
// size. A Mover is one stream's and is not safe for concurrent use.
package flow

import (
	"image"
	"math"
	"slices"
	"sync"
	"unsafe"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/detection"
)

const (
	// regionSide is the least longer side of the grey region an object
	// is followed in, in pixels; larger regions are taken every second,
	// third... pixel to stay under twice it: a 1080p person 120 x 220
	// (a region of 180 x 330) is followed at a sixth of its size.
	regionSide = 48
	// maxPoints corners are followed per object; minPoints must come
	// through for a step to count, else the caller's box is taken.
	maxPoints, minPoints = 16, 3
	// lkWindow and lkLevels: an 11 px window over 2 pyramid levels
	// follows up to about 10 region pixels a step.
	lkWindow, lkLevels = 11, 1
	// searchBackoff frames pass before an object whose corner search
	// came up short is searched again.
	searchBackoff = 4
)

// criteria is created once for the process: gocv's TermCriteria has no
// Close, so one per call would leak.
var criteria = sync.OnceValue(func() gocv.TermCriteria {
	return gocv.NewTermCriteria(gocv.Count+gocv.EPS, 20, 0.03)
})

// Frame is a picture the objects are followed on: RGB24, w x h.
type Frame struct {
	RGB  []byte
	W, H int
}

// Mover follows a stream's objects, each by its key.
type Mover struct {
	objs map[uint64]*object
	// scratch: the current region of an object, the two mosaics of a step
	cur, prev, next []byte
}

type object struct {
	box    [4]float32 // where the object is on the last frame
	reg    region     // the region the grey picture and points are in
	fw, fh int        // the size of the frame reg was taken on
	grey   []byte     // the last frame's region, grey
	pts    []float32  // x, y pairs in reg's pixels
	mask   detection.Mask
	maskAt [4]float32 // the box the mask was seen with
	// idle: frames to go before corners are looked for again, after a
	// search that found too few (an object the flow cannot follow costs
	// a search every searchBackoff frames, not every frame)
	idle int
}

// region is a part of the frame at (x, y) taken every step pixels, w x h
// of them.
type region struct{ x, y, step, w, h int }

// NewMover returns an empty Mover.
func NewMover() *Mover { return &Mover{objs: map[uint64]*object{}} }

// Start places an object on f (seen by the model there, at box, with its
// mask; an empty mask takes every corner in the box), replacing what was
// followed under key.
func (m *Mover) Start(key uint64, f Frame, box [4]float32, mask detection.Mask) {
	o := m.objs[key]
	if o == nil {
		o = &object{}
		m.objs[key] = o
	}
	o.box, o.mask, o.maskAt = box, mask, box
	o.pts, o.idle = o.pts[:0], 0
	m.anchor(o, f)
}

// Keep forgets every object whose key is not in keys.
func (m *Mover) Keep(keys []uint64) {
	for k := range m.objs {
		if !slices.Contains(keys, k) {
			delete(m.objs, k)
		}
	}
}

// Want asks Step for one object: Key as started; Size, the box whose
// size the object takes (the caller's motion model knows the size better
// than corners do); Fallback, the box taken where the flow does not come
// through (too few corners followed, an object never started), the
// object followed from there on the next step.
type Want struct {
	Key            uint64
	Size, Fallback [4]float32
}

// Step follows the objects asked for from the last frame each was on to
// f, and writes each one's box there into boxes (as long as want): its
// last box moved by the median flow of its corners, sized as Size. All
// the objects' regions go through one Lucas-Kanade call, tiled side by
// side: a call has a fixed cost (pyramids, OpenCV's thread pool) that 20
// calls a frame would pay 20 times.
func (m *Mover) Step(f Frame, want []Want, boxes [][4]float32) {
	objs := make([]*object, len(want))
	var tiled []int // indices into want of the objects with corners to follow
	for i, w := range want {
		boxes[i] = w.Fallback
		o := m.objs[w.Key]
		objs[i] = o
		if o != nil && len(o.pts)/2 >= minPoints && len(o.grey) > 0 && o.fw == f.W && o.fh == f.H {
			tiled = append(tiled, i)
		}
	}
	moved := m.follow(f, objs, tiled)
	for i, w := range want {
		o := objs[i]
		if o == nil {
			continue
		}
		if d, ok := moved[i]; ok {
			cx := (o.box[0]+o.box[2])/2 + d[0]
			cy := (o.box[1]+o.box[3])/2 + d[1]
			sw, sh := w.Size[2]-w.Size[0], w.Size[3]-w.Size[1]
			boxes[i] = [4]float32{cx - sw/2, cy - sh/2, cx + sw/2, cy + sh/2}
			// the points moved with the object: into frame pixels, for
			// anchor to place them in the new region
			for k := 0; k+1 < len(o.pts); k += 2 {
				o.pts[k] = o.pts[k]*float32(o.reg.step) + float32(o.reg.x)
				o.pts[k+1] = o.pts[k+1]*float32(o.reg.step) + float32(o.reg.y)
			}
		} else {
			o.pts = o.pts[:0]
		}
		o.box = boxes[i]
		m.anchor(o, f)
	}
}

// follow runs the flow for objs[i], i in tiled, from each one's grey
// region to the same region of f, and returns the median move in frame
// pixels of those with at least minPoints corners followed; their o.pts
// become where the corners went (region pixels), the lost ones dropped.
func (m *Mover) follow(f Frame, objs []*object, tiled []int) map[int][2]float32 {
	if len(tiled) == 0 {
		return nil
	}
	// shelves of regions, each with a window's margin all round so that
	// no window reaches a neighbour, in rows about as wide as the mosaic
	// is high
	at := make([][2]int, len(tiled))
	area, widest := 0, 0
	for _, i := range tiled {
		r := objs[i].reg
		area += (r.w + 2*lkWindow) * (r.h + 2*lkWindow)
		widest = max(widest, r.w+2*lkWindow)
	}
	rowW := max(widest, int(math.Sqrt(float64(area))))
	mw, mh, x, rowH := 0, 0, 0, 0
	for t, i := range tiled {
		r := objs[i].reg
		tw, th := r.w+2*lkWindow, r.h+2*lkWindow
		if x > 0 && x+tw > rowW {
			mh, x, rowH = mh+rowH, 0, 0
		}
		at[t] = [2]int{x + lkWindow, mh + lkWindow}
		x += tw
		mw, rowH = max(mw, x), max(rowH, th)
	}
	mh += rowH
	m.prev = slices.Grow(m.prev[:0], mw*mh)[:mw*mh]
	m.next = slices.Grow(m.next[:0], mw*mh)[:mw*mh]
	clear(m.prev)
	clear(m.next)
	var pts []float32
	first := make([]int, len(tiled)+1) // where each object's points start
	for t, i := range tiled {
		o := objs[i]
		ox, oy := at[t][0], at[t][1]
		m.cur = greyRegion(m.cur, f, o.reg)
		for y := range o.reg.h {
			copy(m.prev[(oy+y)*mw+ox:][:o.reg.w], o.grey[y*o.reg.w:])
			copy(m.next[(oy+y)*mw+ox:][:o.reg.w], m.cur[y*o.reg.w:])
		}
		first[t] = len(pts) / 2
		for k := 0; k+1 < len(o.pts); k += 2 {
			pts = append(pts, o.pts[k]+float32(ox), o.pts[k+1]+float32(oy))
		}
	}
	n := len(pts) / 2
	first[len(tiled)] = n
	out := make([]float32, 2*n)
	status := make([]byte, n)
	errs := make([]float32, n)
	if !lk(m.prev, m.next, mw, mh, pts, out, status, errs) {
		return nil
	}
	moved := make(map[int][2]float32, len(tiled))
	var xs, ys []float32
	for t, i := range tiled {
		o := objs[i]
		ox, oy := float32(at[t][0]), float32(at[t][1])
		xs, ys = xs[:0], ys[:0]
		kept := o.pts[:0]
		for k := first[t]; k < first[t+1]; k++ {
			x, y := out[2*k]-ox, out[2*k+1]-oy
			if status[k] == 0 || x < 0 || y < 0 || x >= float32(o.reg.w) || y >= float32(o.reg.h) {
				continue
			}
			xs = append(xs, x-(pts[2*k]-ox))
			ys = append(ys, y-(pts[2*k+1]-oy))
			kept = append(kept, x, y)
		}
		o.pts = kept
		if len(xs) >= minPoints {
			st := float32(o.reg.step)
			moved[i] = [2]float32{median(xs) * st, median(ys) * st}
		}
	}
	return moved
}

// lk runs pyramidal Lucas-Kanade from prev to next (grey, w x h) for the
// points pts (x, y pairs), writing where they went, whether each was
// found and its error. The outputs are Go memory of the size and type
// OpenCV writes, so it fills them in place and nothing is copied back.
func lk(prev, next []byte, w, h int, pts, out []float32, status []byte, errs []float32) bool {
	n := len(pts) / 2
	if n == 0 {
		return false
	}
	pm, err := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC1, prev)
	if err != nil {
		return false
	}
	defer pm.Close()
	nm, err := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC1, next)
	if err != nil {
		return false
	}
	defer nm.Close()
	in, err := gocv.NewMatFromBytes(n, 1, gocv.MatTypeCV32FC2, floatBytes(pts))
	if err != nil {
		return false
	}
	defer in.Close()
	om, err := gocv.NewMatFromBytes(n, 1, gocv.MatTypeCV32FC2, floatBytes(out))
	if err != nil {
		return false
	}
	defer om.Close()
	sm, err := gocv.NewMatFromBytes(n, 1, gocv.MatTypeCV8UC1, status)
	if err != nil {
		return false
	}
	defer sm.Close()
	em, err := gocv.NewMatFromBytes(n, 1, gocv.MatTypeCV32FC1, floatBytes(errs))
	if err != nil {
		return false
	}
	defer em.Close()
	gocv.CalcOpticalFlowPyrLKWithParams(pm, nm, in, om, &sm, &em,
		image.Pt(lkWindow, lkWindow), lkLevels, criteria(), 0, 1e-4)
	// OpenCV reallocates an output whose shape is not what it writes:
	// then the Go memory holds nothing
	if got, err := om.DataPtrFloat32(); err != nil || len(got) != 2*n || &got[0] != &out[0] {
		return false
	}
	if got, err := sm.DataPtrUint8(); err != nil || len(got) != n || &got[0] != &status[0] {
		return false
	}
	return true
}

// anchor takes the object's region around its box on f, its grey
// picture, and its points: the followed ones that are still in the
// region (o.pts in frame pixels on entry), topped up with new corners on
// the object when too few are left.
func (m *Mover) anchor(o *object, f Frame) {
	o.reg, o.fw, o.fh = regionOf(o.box, f.W, f.H), f.W, f.H
	if o.reg.w < 4 || o.reg.h < 4 {
		o.grey, o.pts = o.grey[:0], o.pts[:0]
		return
	}
	o.grey = greyRegion(o.grey, f, o.reg)
	kept := o.pts[:0]
	for i := 0; i+1 < len(o.pts); i += 2 {
		x := (o.pts[i] - float32(o.reg.x)) / float32(o.reg.step)
		y := (o.pts[i+1] - float32(o.reg.y)) / float32(o.reg.step)
		if x >= 0 && y >= 0 && x < float32(o.reg.w) && y < float32(o.reg.h) {
			kept = append(kept, x, y)
		}
	}
	o.pts = kept
	if len(o.pts)/2 >= maxPoints/2 {
		return
	}
	if o.idle > 0 {
		o.idle--
		return
	}
	defer func() {
		if len(o.pts)/2 < minPoints {
			o.idle = searchBackoff
		}
	}()
	// Corners are looked for on the object only: the picture off it is
	// made flat (the object's mean grey), else a busy background takes
	// every corner the search keeps (gocv's goodFeaturesToTrack has no
	// mask argument).
	m.cur = slices.Grow(m.cur[:0], len(o.grey))[:len(o.grey)]
	sum, on := 0, 0
	on0 := o.onObject()
	for y := range o.reg.h {
		for x := range o.reg.w {
			i := y*o.reg.w + x
			if on0(o.reg.x+x*o.reg.step, o.reg.y+y*o.reg.step) {
				m.cur[i] = 1
				sum += int(o.grey[i])
				on++
			} else {
				m.cur[i] = 0
			}
		}
	}
	if on == 0 {
		return
	}
	mean := byte(sum / on)
	for i, c := range m.cur {
		if c == 1 {
			m.cur[i] = o.grey[i]
		} else {
			m.cur[i] = mean
		}
	}
	g, err := gocv.NewMatFromBytes(o.reg.h, o.reg.w, gocv.MatTypeCV8UC1, m.cur)
	if err != nil {
		return
	}
	defer g.Close()
	corners := gocv.NewMat()
	defer corners.Close()
	gocv.GoodFeaturesToTrack(g, &corners, maxPoints-len(o.pts)/2, 0.01, 2)
	if corners.Empty() || corners.Type() != gocv.MatTypeCV32FC2 {
		return
	}
	cs, err := corners.DataPtrFloat32()
	if err != nil {
		return
	}
	for i := 0; i+1 < len(cs) && len(o.pts)/2 < maxPoints; i += 2 {
		o.pts = append(o.pts, cs[i], cs[i+1])
	}
}

// onObject says whether a frame pixel is on the object: in its mask or
// next to it (corners sit on the outline: 0.464 mask AP on the sample in
// live timing at interval 3 without this pixel of slack, 0.471 with it),
// moved as the box moved since the mask was seen; in its box when it has
// no mask.
func (o *object) onObject() func(x, y int) bool {
	if o.mask.W <= 0 || o.mask.H <= 0 || len(o.mask.Bits) < o.mask.W*o.mask.H {
		b := o.box
		return func(x, y int) bool {
			return float32(x) >= b[0] && float32(x) < b[2] && float32(y) >= b[1] && float32(y) < b[3]
		}
	}
	m := o.mask
	dx := int(math.Round(float64(o.box[0]+o.box[2]-o.maskAt[0]-o.maskAt[2])/2)) + m.X
	dy := int(math.Round(float64(o.box[1]+o.box[3]-o.maskAt[1]-o.maskAt[3])/2)) + m.Y
	return func(x, y int) bool {
		x, y = x-dx, y-dy
		for yy := max(y-1, 0); yy <= min(y+1, m.H-1); yy++ {
			for xx := max(x-1, 0); xx <= min(x+1, m.W-1); xx++ {
				if m.Bits[yy*m.W+xx] != 0 {
					return true
				}
			}
		}
		return false
	}
}

// regionOf is the box grown by a quarter of its size each side (the room
// the object moves in until the next step), clipped to the frame, taken
// every step pixels so that its longer side is regionSide to twice that.
func regionOf(b [4]float32, fw, fh int) region {
	mw, mh := (b[2]-b[0])/4+2, (b[3]-b[1])/4+2
	x0, y0 := max(0, int(b[0]-mw)), max(0, int(b[1]-mh))
	x1, y1 := min(fw, int(b[2]+mw)+1), min(fh, int(b[3]+mh)+1)
	if x1 <= x0 || y1 <= y0 {
		return region{}
	}
	step := max(1, max(x1-x0, y1-y0)/regionSide)
	return region{x: x0, y: y0, step: step, w: (x1 - x0) / step, h: (y1 - y0) / step}
}

// greyRegion writes r of f as grey (BT.601 integer weights), one pixel
// every r.step: nearest sampling keeps the cost at the region's output
// size, and LK's pyramid smooths what aliasing it brings.
func greyRegion(dst []byte, f Frame, r region) []byte {
	dst = slices.Grow(dst[:0], r.w*r.h)[:r.w*r.h]
	for y := range r.h {
		row := f.RGB[((r.y+y*r.step)*f.W+r.x)*3:]
		out := dst[y*r.w : (y+1)*r.w]
		for x := range out {
			p := row[x*r.step*3:]
			out[x] = byte((77*int(p[0]) + 150*int(p[1]) + 29*int(p[2])) >> 8)
		}
	}
	return dst
}

func floatBytes(f []float32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*4)
}

// median of a few values (it reorders them).
func median(v []float32) float32 {
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
