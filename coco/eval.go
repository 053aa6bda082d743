package coco

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// IoUType says what COCOeval compares: boxes or masks.
type IoUType string

const (
	// IoUBBox compares boxes [x, y, w, h] (box AP).
	IoUBBox IoUType = "bbox"
	// IoUSegm compares masks (mask AP).
	IoUSegm IoUType = "segm"
)

// COCO's default parameters (pycocotools Params.setDetParams).
var (
	// iouThrs and recThrs are built as np.linspace builds them, so each is
	// the same double as in pycocotools (0.8999999999999999, not 0.9) and a
	// tie at a threshold goes the same way.
	iouThrs = linspace(.5, .95, 10)
	recThrs = linspace(0, 1, 101)
	maxDets = [3]int{1, 10, 100}
	// areaRngs are all, small, medium, large; both ends are inclusive.
	areaRngs = [4][2]float64{{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}}
	areaLbls = [4]string{"all", "small", "medium", "large"}
)

// linspace is numpy's linspace with endpoint: start + i*step, the last
// value set to stop.
func linspace(start, stop float64, num int) []float64 {
	out := make([]float64, num)
	step := (stop - start) / float64(num-1)
	for i := range out {
		out[i] = float64(float64(i)*step) + start
	}
	out[num-1] = stop
	return out
}

// Stats are the 12 numbers pycocotools' COCOeval.summarize prints, in its
// order. A value is -1 when no category has a ground truth in the area range
// it covers. The JSON names are those of htc.evaluation's STAT_NAMES.
type Stats struct {
	AP       float64 `json:"AP"`    // AP @[IoU=0.50:0.95 | area=all | maxDets=100]
	AP50     float64 `json:"AP50"`  // AP @[IoU=0.50 | area=all | maxDets=100]
	AP75     float64 `json:"AP75"`  // AP @[IoU=0.75 | area=all | maxDets=100]
	APSmall  float64 `json:"APs"`   // AP @[IoU=0.50:0.95 | area=small | maxDets=100]
	APMedium float64 `json:"APm"`   // AP @[IoU=0.50:0.95 | area=medium | maxDets=100]
	APLarge  float64 `json:"APl"`   // AP @[IoU=0.50:0.95 | area=large | maxDets=100]
	AR1      float64 `json:"AR1"`   // AR @[IoU=0.50:0.95 | area=all | maxDets=1]
	AR10     float64 `json:"AR10"`  // AR @[IoU=0.50:0.95 | area=all | maxDets=10]
	AR100    float64 `json:"AR100"` // AR @[IoU=0.50:0.95 | area=all | maxDets=100]
	ARSmall  float64 `json:"ARs"`   // AR @[IoU=0.50:0.95 | area=small | maxDets=100]
	ARMedium float64 `json:"ARm"`   // AR @[IoU=0.50:0.95 | area=medium | maxDets=100]
	ARLarge  float64 `json:"ARl"`   // AR @[IoU=0.50:0.95 | area=large | maxDets=100]
}

// StatNames are the JSON names of the 12 stats, in Values' order.
var StatNames = [12]string{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}

// Values returns the 12 stats in pycocotools' order (its COCOeval.stats).
func (s Stats) Values() [12]float64 {
	return [12]float64{s.AP, s.AP50, s.AP75, s.APSmall, s.APMedium, s.APLarge,
		s.AR1, s.AR10, s.AR100, s.ARSmall, s.ARMedium, s.ARLarge}
}

// statSpecs say how each stat is summarised: AP or AR, one IoU threshold
// (or -1 for all), area range and maxDets, as COCOeval._summarizeDets.
var statSpecs = [12]struct {
	ap      bool
	iouThr  float64
	area    int
	maxDets int
}{
	{true, -1, 0, 100}, {true, .5, 0, 100}, {true, .75, 0, 100},
	{true, -1, 1, 100}, {true, -1, 2, 100}, {true, -1, 3, 100},
	{false, -1, 0, 1}, {false, -1, 0, 10}, {false, -1, 0, 100},
	{false, -1, 1, 100}, {false, -1, 2, 100}, {false, -1, 3, 100},
}

// String returns the 12 lines pycocotools prints, such as
// " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.372".
func (s Stats) String() string {
	var b strings.Builder
	for i, v := range s.Values() {
		sp := statSpecs[i]
		title, kind := "Average Recall", "(AR)"
		if sp.ap {
			title, kind = "Average Precision", "(AP)"
		}
		iou := fmt.Sprintf("%0.2f:%0.2f", iouThrs[0], iouThrs[len(iouThrs)-1])
		if sp.iouThr >= 0 {
			iou = fmt.Sprintf("%0.2f", sp.iouThr)
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f",
			title, kind, iou, areaLbls[sp.area], sp.maxDets, v)
	}
	return b.String()
}

// Evaluate runs pycocotools' COCOeval (evaluate, accumulate, summarize) of
// dets against gt for one IoU type and returns the 12 summary stats.
//
// As in COCOeval with default parameters, the images are gt's images and the
// categories gt's categories; detections of other images or categories are
// left out (pycocotools' loadRes refuses other images outright). Per image
// and category only the 100 best-scored detections count.
//
// A ground truth's area is its annotation's area field. A detection's area,
// which decides whether an unmatched detection counts in an area range, is
// w*h of its box for bbox, or the mask's area when it has no box (as loadRes
// sets it); for segm it is always the mask's area. That last is what
// detectron2 and mmdetection get by removing the box before loadRes: given a
// result with both, loadRes takes the box's area even for segm, which makes
// mask APs/APm/APl depend on the box.
func Evaluate(gt *Dataset, dets []Detection, iouType IoUType) (Stats, error) {
	if iouType != IoUBBox && iouType != IoUSegm {
		return Stats{}, fmt.Errorf("coco eval: iou type %q, want %q or %q", iouType, IoUBBox, IoUSegm)
	}
	if gt == nil {
		return Stats{}, fmt.Errorf("coco eval: no ground truth")
	}
	e, err := prepare(gt, dets, iouType)
	if err != nil {
		return Stats{}, fmt.Errorf("coco eval %s: %w", iouType, err)
	}
	if err := e.evaluate(); err != nil {
		return Stats{}, fmt.Errorf("coco eval %s: %w", iouType, err)
	}
	e.accumulate()
	return e.summarize(), nil
}

type gtObj struct {
	area  float64
	crowd bool
	box   [4]float64
	mask  mask
}

type dtObj struct {
	score float64
	area  float64
	box   [4]float64
	mask  mask
}

// cell is one image and category, by their positions in the sorted ids.
type cell struct{ img, cat int }

// evalImg is COCOeval.evaluateImg's result for one image, category and area
// range; matched and ignore are indexed [IoU threshold][detection].
type evalImg struct {
	scores   []float64
	matched  [][]bool
	ignore   [][]bool
	gtIgnore []bool
}

type evaluator struct {
	iouType IoUType
	nImg    int
	nCat    int
	gts     map[cell][]gtObj
	dts     map[cell][]dtObj
	// evalImgs[k][a] lists, in image order, the evalImg of every image that
	// has ground truths or detections of category k; the others are None in
	// pycocotools and skipped by accumulate.
	evalImgs [][len(areaRngs)][]evalImg
	// precision is [T][R][K][A][M] and recall [T][K][A][M], flattened.
	precision []float64
	recall    []float64
}

func prepare(gt *Dataset, dets []Detection, iouType IoUType) (*evaluator, error) {
	images := make(map[int64]Image, len(gt.Images))
	imgIDs := make([]int64, 0, len(gt.Images))
	for _, im := range gt.Images {
		if _, dup := images[im.ID]; dup {
			return nil, fmt.Errorf("ground truth: image id %d appears twice", im.ID)
		}
		images[im.ID] = im
		imgIDs = append(imgIDs, im.ID)
	}
	slices.Sort(imgIDs)
	catIDs := make([]int64, 0, len(gt.Categories))
	for _, c := range gt.Categories {
		catIDs = append(catIDs, c.ID)
	}
	slices.Sort(catIDs)
	catIDs = slices.Compact(catIDs)
	imgIdx := make(map[int64]int, len(imgIDs))
	for i, id := range imgIDs {
		imgIdx[id] = i
	}
	catIdx := make(map[int64]int, len(catIDs))
	for k, id := range catIDs {
		catIdx[id] = k
	}

	e := &evaluator{
		iouType: iouType,
		nImg:    len(imgIDs),
		nCat:    len(catIDs),
		gts:     make(map[cell][]gtObj),
		dts:     make(map[cell][]dtObj),
	}
	for _, ann := range gt.Annotations {
		i, okImg := imgIdx[ann.ImageID]
		k, okCat := catIdx[ann.CategoryID]
		if !okImg || !okCat {
			continue
		}
		g := gtObj{area: ann.Area, crowd: ann.IsCrowd != 0}
		switch iouType {
		case IoUBBox:
			if len(ann.BBox) != 4 {
				return nil, fmt.Errorf("ground-truth annotation %d: bbox has %d numbers, want [x, y, w, h]", ann.ID, len(ann.BBox))
			}
			g.box = [4]float64(ann.BBox)
		case IoUSegm:
			if ann.Segmentation == nil {
				return nil, fmt.Errorf("ground-truth annotation %d has no segmentation", ann.ID)
			}
			m, err := imageMask(ann.Segmentation, images[ann.ImageID])
			if err != nil {
				return nil, fmt.Errorf("ground-truth annotation %d: %w", ann.ID, err)
			}
			g.mask = m
		}
		c := cell{i, k}
		e.gts[c] = append(e.gts[c], g)
	}

	for n, det := range dets {
		i, okImg := imgIdx[det.ImageID]
		k, okCat := catIdx[det.CategoryID]
		if !okImg || !okCat {
			continue
		}
		if math.IsNaN(det.Score) {
			return nil, fmt.Errorf("result %d: score is NaN", n)
		}
		if len(det.BBox) != 0 && len(det.BBox) != 4 {
			return nil, fmt.Errorf("result %d: bbox has %d numbers, want [x, y, w, h]", n, len(det.BBox))
		}
		d := dtObj{score: det.Score}
		switch iouType {
		case IoUBBox:
			switch {
			case len(det.BBox) == 4:
				d.box = [4]float64(det.BBox)
				d.area = d.box[2] * d.box[3]
			case det.Segmentation != nil:
				m, err := imageMask(det.Segmentation, images[det.ImageID])
				if err != nil {
					return nil, fmt.Errorf("result %d: %w", n, err)
				}
				d.box, d.area = m.box, float64(m.area)
			default:
				return nil, fmt.Errorf("result %d has neither bbox nor segmentation", n)
			}
		case IoUSegm:
			if det.Segmentation == nil {
				return nil, fmt.Errorf("result %d has no segmentation, which segm evaluation needs", n)
			}
			m, err := imageMask(det.Segmentation, images[det.ImageID])
			if err != nil {
				return nil, fmt.Errorf("result %d: %w", n, err)
			}
			d.mask, d.area = m, float64(m.area)
		}
		c := cell{i, k}
		e.dts[c] = append(e.dts[c], d)
	}
	// Highest score first, ties in input order (numpy's stable mergesort);
	// beyond maxDets[-1] a detection can never count.
	for c, ds := range e.dts {
		slices.SortStableFunc(ds, func(a, b dtObj) int {
			switch {
			case a.score > b.score:
				return -1
			case a.score < b.score:
				return 1
			}
			return 0
		})
		e.dts[c] = ds[:min(len(ds), maxDets[len(maxDets)-1])]
	}
	return e, nil
}

// imageMask is the mask of a segmentation on its image; a mask of another
// size than the image would make pycocotools' IoU -1 or 0 without a word,
// so it is an error here.
func imageMask(s *Segmentation, im Image) (mask, error) {
	r, err := s.ToRLE(im.Height, im.Width)
	if err != nil {
		return mask{}, err
	}
	if r.Size != [2]int{im.Height, im.Width} {
		return mask{}, fmt.Errorf("%w: mask size %v differs from image %d's size [%d %d]", ErrBadRLE, r.Size, im.ID, im.Height, im.Width)
	}
	return newMask(r), nil
}

func (e *evaluator) evaluate() error {
	byCat := make([][]int, e.nCat)
	for c := range e.gts {
		byCat[c.cat] = append(byCat[c.cat], c.img)
	}
	for c := range e.dts {
		if _, ok := e.gts[c]; !ok {
			byCat[c.cat] = append(byCat[c.cat], c.img)
		}
	}
	e.evalImgs = make([][len(areaRngs)][]evalImg, e.nCat)
	for k, imgs := range byCat {
		sort.Ints(imgs)
		for _, i := range imgs {
			c := cell{i, k}
			g, d := e.gts[c], e.dts[c]
			ious, err := e.computeIoU(g, d)
			if err != nil {
				return err
			}
			for a, rng := range areaRngs {
				e.evalImgs[k][a] = append(e.evalImgs[k][a], evaluateImg(g, d, ious, rng, maxDets[len(maxDets)-1]))
			}
		}
	}
	return nil
}

// computeIoU returns ious[detection][ground truth] in the ground truths'
// original order, crowd regions scored as IoU and BoxIoU do.
func (e *evaluator) computeIoU(g []gtObj, d []dtObj) ([][]float64, error) {
	ious := make([][]float64, len(d))
	for di := range d {
		ious[di] = make([]float64, len(g))
		for gi := range g {
			if e.iouType == IoUBBox {
				ious[di][gi] = boxIoU(d[di].box, g[gi].box, g[gi].crowd)
				continue
			}
			o, err := maskIoU(d[di].mask, g[gi].mask, g[gi].crowd)
			if err != nil {
				return nil, err
			}
			ious[di][gi] = o
		}
	}
	return ious, nil
}

// evaluateImg matches one image's detections of one category to its ground
// truths at every IoU threshold, as COCOeval.evaluateImg: greedily in score
// order, each detection taking the unmatched ground truth of highest IoU at
// or above the threshold. Ignored ground truths (crowd or outside the area
// range) come last and are taken only when no regular one is left to match;
// a detection matched to one is ignored rather than counted, and a crowd
// region may take any number of detections.
func evaluateImg(g []gtObj, d []dtObj, ious [][]float64, rng [2]float64, maxDet int) evalImg {
	d = d[:min(len(d), maxDet)]
	order := make([]int, len(g))
	for j := range order {
		order[j] = j
	}
	ignored := func(x gtObj) bool { return x.crowd || x.area < rng[0] || x.area > rng[1] }
	slices.SortStableFunc(order, func(a, b int) int { return b2i(ignored(g[a])) - b2i(ignored(g[b])) })
	gtIg := make([]bool, len(g))
	crowd := make([]bool, len(g))
	for j, o := range order {
		gtIg[j] = ignored(g[o])
		crowd[j] = g[o].crowd
	}

	// min(t, 1-1e-10) lets an IoU of exactly 1 match at a threshold of 1;
	// computed at run time so it rounds as Python's float does.
	one, tiny := 1.0, 1e-10
	capIoU := one - tiny

	out := evalImg{
		scores:   make([]float64, len(d)),
		matched:  make([][]bool, len(iouThrs)),
		ignore:   make([][]bool, len(iouThrs)),
		gtIgnore: gtIg,
	}
	for di := range d {
		out.scores[di] = d[di].score
	}
	gtMatched := make([]bool, len(g))
	for t, thr := range iouThrs {
		matched := make([]bool, len(d))
		ignore := make([]bool, len(d))
		clear(gtMatched)
		for di := range d {
			best := min(thr, capIoU)
			m := -1
			for gj := range g {
				if gtMatched[gj] && !crowd[gj] {
					continue
				}
				// Once a regular ground truth is matched, ignored ones
				// (sorted last) cannot take the detection from it.
				if m > -1 && !gtIg[m] && gtIg[gj] {
					break
				}
				if iou := ious[di][order[gj]]; iou >= best {
					best = iou
					m = gj
				}
			}
			if m == -1 {
				continue
			}
			ignore[di] = gtIg[m]
			matched[di] = true
			gtMatched[m] = true
		}
		for di := range d {
			if !matched[di] && (d[di].area < rng[0] || d[di].area > rng[1]) {
				ignore[di] = true
			}
		}
		out.matched[t], out.ignore[t] = matched, ignore
	}
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

const (
	nT = 10  // IoU thresholds
	nR = 101 // recall thresholds
	nA = len(areaRngs)
	nM = len(maxDets)
)

func (e *evaluator) pIdx(t, r, k, a, m int) int { return (((t*nR+r)*e.nCat+k)*nA+a)*nM + m }
func (e *evaluator) rIdx(t, k, a, m int) int    { return ((t*e.nCat+k)*nA+a)*nM + m }

// accumulate is COCOeval.accumulate: for every category, area range and
// maxDets, the detections of all images are ranked by score, and precision
// is read at 101 recall points from the precision envelope. Entries stay -1
// where the category has no regular ground truth in the range.
func (e *evaluator) accumulate() {
	e.precision = make([]float64, nT*nR*e.nCat*nA*nM)
	e.recall = make([]float64, nT*e.nCat*nA*nM)
	for i := range e.precision {
		e.precision[i] = -1
	}
	for i := range e.recall {
		e.recall[i] = -1
	}
	// np.spacing(1): what pycocotools adds so 0/0 precision is 0.
	eps := math.Nextafter(1, 2) - 1

	type ref struct{ img, det int }
	for k := 0; k < e.nCat; k++ {
		for a := range nA {
			E := e.evalImgs[k][a]
			if len(E) == 0 {
				continue
			}
			npig := 0
			for _, ev := range E {
				for _, ig := range ev.gtIgnore {
					if !ig {
						npig++
					}
				}
			}
			for m, maxDet := range maxDets {
				if npig == 0 {
					continue
				}
				var refs []ref
				for i, ev := range E {
					for j := range min(len(ev.scores), maxDet) {
						refs = append(refs, ref{i, j})
					}
				}
				slices.SortStableFunc(refs, func(x, y ref) int {
					sx, sy := E[x.img].scores[x.det], E[y.img].scores[y.det]
					switch {
					case sx > sy:
						return -1
					case sx < sy:
						return 1
					}
					return 0
				})
				nd := len(refs)
				rc := make([]float64, nd)
				pr := make([]float64, nd)
				for t := range nT {
					var tp, fp float64
					for n, r := range refs {
						ev := E[r.img]
						if !ev.ignore[t][r.det] {
							if ev.matched[t][r.det] {
								tp++
							} else {
								fp++
							}
						}
						rc[n] = tp / float64(npig)
						pr[n] = tp / (fp + tp + eps)
					}
					if nd > 0 {
						e.recall[e.rIdx(t, k, a, m)] = rc[nd-1]
					} else {
						e.recall[e.rIdx(t, k, a, m)] = 0
					}
					for n := nd - 1; n > 0; n-- {
						if pr[n] > pr[n-1] {
							pr[n-1] = pr[n]
						}
					}
					for r, thr := range recThrs {
						q := 0.0
						// np.searchsorted(rc, thr, side="left")
						if n := sort.SearchFloat64s(rc, thr); n < nd {
							q = pr[n]
						}
						e.precision[e.pIdx(t, r, k, a, m)] = q
					}
				}
			}
		}
	}
}

// summarize is COCOeval.summarize: each stat is the mean of the precision
// (or recall) entries it covers that are not -1, or -1 if there are none.
// The entries are added in numpy's memory order; numpy's pairwise summation
// can still differ in the last bits, far below the three printed decimals.
func (e *evaluator) summarize() Stats {
	var v [12]float64
	for i, sp := range statSpecs {
		m := slices.Index(maxDets[:], sp.maxDets)
		var sum float64
		n := 0
		add := func(x float64) {
			if x > -1 {
				sum += x
				n++
			}
		}
		for t, thr := range iouThrs {
			// Exact equality, as np.where(iouThr == p.iouThrs): .5 and .75
			// are exactly among linspace's values.
			if sp.iouThr >= 0 && thr != sp.iouThr {
				continue
			}
			if !sp.ap {
				for k := range e.nCat {
					add(e.recall[e.rIdx(t, k, sp.area, m)])
				}
				continue
			}
			for r := range nR {
				for k := range e.nCat {
					add(e.precision[e.pIdx(t, r, k, sp.area, m)])
				}
			}
		}
		v[i] = -1
		if n > 0 {
			v[i] = sum / float64(n)
		}
	}
	return Stats{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]}
}
