package cascade

import (
	"sort"

	"github.com/htcstream/htcstream/detection"
)

// DetectConfig is the R-CNN test configuration (mmdetection's test_cfg.rcnn).
type DetectConfig struct {
	ScoreThreshold float32 // 0.001 for evaluation; higher for display
	NMSIoU         float32 // 0.5
	MaxPerImage    int     // 100
}

// SelectDetections runs mmdetection's multiclass_nms on class-agnostic boxes:
// every (box, class) pair with a probability above the threshold (background,
// the last column, excluded) is a candidate; NMS runs per class; the best
// MaxPerImage of all classes are returned, best first. probs is laid out
// [R][C+1]. rois[k] is the index in boxes of dets[k]'s box, for the caller
// to look up what else it knows of that RoI (its stage scores).
func SelectDetections(boxes []detection.Box, probs []float32, c1 int, cfg DetectConfig) (dets []detection.Detection, rois []int) {
	c := c1 - 1
	var (
		cb     []detection.Box
		cs     []float32
		cl     []int
		origin []int
	)
	for i, b := range boxes {
		if !b.Finite() {
			continue
		}
		for k := 0; k < c; k++ {
			s := probs[i*c1+k]
			if s > cfg.ScoreThreshold {
				cb = append(cb, b)
				cs = append(cs, s)
				cl = append(cl, k)
				origin = append(origin, i)
			}
		}
	}
	keep := BatchedNMS(cb, cs, cl, cfg.NMSIoU)
	if cfg.MaxPerImage > 0 && len(keep) > cfg.MaxPerImage {
		keep = keep[:cfg.MaxPerImage]
	}
	sort.SliceStable(keep, func(a, b int) bool { return cs[keep[a]] > cs[keep[b]] })
	dets = make([]detection.Detection, len(keep))
	rois = make([]int, len(keep))
	for n, i := range keep {
		dets[n] = detection.Detection{Box: cb[i], Score: cs[i], Label: cl[i]}
		rois[n] = origin[i]
	}
	return dets, rois
}
