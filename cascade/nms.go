package cascade

import (
	"sort"

	"github.com/htcstream/htcstream/detection"
)

// NMS returns the indices of boxes kept by greedy non-maximum suppression,
// best score first: a box is dropped when its IoU with a kept box is above
// iou (torchvision and mmcv's rule). Ties in score keep the input order, so
// the result is deterministic. Boxes with a NaN score or coordinate are
// dropped.
func NMS(boxes []detection.Box, scores []float32, iou float32) []int {
	return NMSLimit(boxes, scores, iou, 0)
}

// NMSLimit is NMS that stops once limit boxes are kept (0: no limit): the
// greedy pass keeps boxes best first, so its first limit boxes are the same
// whether it goes on or not, and the rest of the pairs need no comparing.
func NMSLimit(boxes []detection.Box, scores []float32, iou float32, limit int) []int {
	order := make([]int, 0, len(boxes))
	for i := range boxes {
		if scores[i] == scores[i] && boxes[i].Finite() {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return scores[order[a]] > scores[order[b]] })
	keep := make([]int, 0, len(order))
	suppressed := make([]bool, len(boxes))
	// Areas once, not per pair: NMS over 500 proposals compares up to
	// 125000 pairs per level.
	areas := make([]float32, len(boxes))
	for _, i := range order {
		areas[i] = boxes[i].Area()
	}
	for n, i := range order {
		if suppressed[i] {
			continue
		}
		keep = append(keep, i)
		if len(keep) == limit {
			break
		}
		a := boxes[i]
		for _, j := range order[n+1:] {
			if suppressed[j] {
				continue
			}
			b := boxes[j]
			iw := min(a.X2, b.X2) - max(a.X1, b.X1)
			if iw <= 0 {
				continue
			}
			ih := min(a.Y2, b.Y2) - max(a.Y1, b.Y1)
			if ih <= 0 {
				continue
			}
			inter := iw * ih
			union := areas[i] + areas[j] - inter
			if union > 0 && inter/union > iou {
				suppressed[j] = true
			}
		}
	}
	return keep
}

// BatchedNMS runs NMS separately within each group (class or level) and
// returns the kept indices of all groups merged, best score first — the
// result of mmcv's batched_nms.
func BatchedNMS(boxes []detection.Box, scores []float32, groups []int, iou float32) []int {
	byGroup := map[int][]int{}
	for i, g := range groups {
		byGroup[g] = append(byGroup[g], i)
	}
	var keep []int
	for _, idx := range byGroup {
		b := make([]detection.Box, len(idx))
		s := make([]float32, len(idx))
		for k, i := range idx {
			b[k], s[k] = boxes[i], scores[i]
		}
		for _, k := range NMS(b, s, iou) {
			keep = append(keep, idx[k])
		}
	}
	sort.SliceStable(keep, func(a, b int) bool {
		if scores[keep[a]] != scores[keep[b]] {
			return scores[keep[a]] > scores[keep[b]]
		}
		return keep[a] < keep[b]
	})
	return keep
}
