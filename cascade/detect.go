package cascade

import "sort"

// Detection is one detected instance in frame pixels.
type Detection struct {
	Box   Box
	Score float32
	// Label is the thing class, 0..C-1.
	Label int
	// StageScores holds each stage's own softmax score for Label, kept
	// for inspection of the cascade.
	StageScores []float32
	// Mask is the instance's binary mask; empty (W = 0) until masks are
	// pasted.
	Mask Mask
	// roi is the index of the RoI this detection came from.
	roi int
}

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
// [R][C+1].
func SelectDetections(boxes []Box, probs []float32, c1 int, cfg DetectConfig) []Detection {
	c := c1 - 1
	var (
		cb     []Box
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
	out := make([]Detection, len(keep))
	for n, i := range keep {
		out[n] = Detection{Box: cb[i], Score: cs[i], Label: cl[i], roi: origin[i]}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].Score > out[b].Score })
	return out
}
