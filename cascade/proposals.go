package cascade

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/htcstream/htcstream/detection"
)

// RPNConfig is the RPN's test configuration (mmdetection's test_cfg.rpn).
type RPNConfig struct {
	// NMSPre: candidates kept per level, by score, before decoding (1000).
	NMSPre int
	// NMSIoU: NMS threshold, applied within each level (0.7).
	NMSIoU float32
	// MaxProposals: kept overall, by score (1000).
	MaxProposals int
	// MinBoxSize: proposals must be wider and taller than this (0).
	MinBoxSize float32
	// DeltaClip bounds |dw|, |dh| (DefaultDeltaClip).
	DeltaClip float32
}

// RPNLevel is one FPN level's RPN output for one image, in the graph's NCHW
// layout without the batch axis.
type RPNLevel struct {
	// Objectness holds A*H*W logits, laid out [A][H][W].
	Objectness []float32
	// Deltas holds 4A*H*W values, laid out [A*4][H][W] (anchor-major).
	Deltas []float32
	H, W   int
}

// Proposal is a scored RPN proposal in network-input pixels.
type Proposal struct {
	Box   detection.Box
	Score float32
}

// Proposals decodes one image's RPN outputs into proposals as mmdetection
// 2.x's RPNHead does at test time: per level the NMSPre best sigmoid scores,
// deltas decoded onto their anchors and clipped to the resized image
// (imgW x imgH), boxes not larger than MinBoxSize dropped, NMS per level;
// then the MaxProposals best of all levels, best first.
func Proposals(grids *AnchorGrids, levels []RPNLevel, cfg RPNConfig, imgW, imgH int) ([]Proposal, error) {
	if len(levels) != len(grids.cfg.Strides) {
		return nil, fmt.Errorf("rpn: %d levels of output for %d anchor strides", len(levels), len(grids.cfg.Strides))
	}
	a := grids.cfg.PerLocation()
	coder := DeltaCoder{Stds: [4]float32{1, 1, 1, 1}, Clip: cfg.DeltaClip}
	var (
		boxes  []detection.Box
		scores []float32
	)
	for l, lv := range levels {
		hw := lv.H * lv.W
		if len(lv.Objectness) != a*hw || len(lv.Deltas) != 4*a*hw {
			return nil, fmt.Errorf("rpn level %d: %d scores and %d deltas for a %dx%d map with %d anchors",
				l, len(lv.Objectness), len(lv.Deltas), lv.H, lv.W, a)
		}
		anchors := grids.Level(l, lv.H, lv.W)
		// Flattened index i = (y*W + x)*A + a, the order of the anchors.
		cand := make([]scored, 0, a*hw)
		for k := 0; k < a; k++ {
			for loc, v := range lv.Objectness[k*hw : (k+1)*hw] {
				if v == v { // not NaN
					cand = append(cand, scored{v, loc*a + k})
				}
			}
		}
		cand = topK(cand, cfg.NMSPre)
		idx := make([]int, len(cand))
		for n, c := range cand {
			idx[n] = c.i
		}
		obj := func(i int) float32 { loc, k := i/a, i%a; return lv.Objectness[k*hw+loc] }
		lb := make([]detection.Box, 0, len(idx))
		ls := make([]float32, 0, len(idx))
		for _, i := range idx {
			loc, k := i/a, i%a
			d := [4]float32{
				lv.Deltas[(4*k+0)*hw+loc], lv.Deltas[(4*k+1)*hw+loc],
				lv.Deltas[(4*k+2)*hw+loc], lv.Deltas[(4*k+3)*hw+loc],
			}
			b := coder.Decode(anchors[i], d).Clip(float32(imgW), float32(imgH))
			if b.Width() <= cfg.MinBoxSize || b.Height() <= cfg.MinBoxSize || !b.Finite() {
				continue
			}
			lb = append(lb, b)
			ls = append(ls, sigmoid(obj(i)))
		}
		for _, k := range NMS(lb, ls, cfg.NMSIoU) {
			boxes = append(boxes, lb[k])
			scores = append(scores, ls[k])
		}
	}
	order := make([]int, len(boxes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(p, q int) bool { return scores[order[p]] > scores[order[q]] })
	if cfg.MaxProposals > 0 && len(order) > cfg.MaxProposals {
		order = order[:cfg.MaxProposals]
	}
	out := make([]Proposal, len(order))
	for n, i := range order {
		out[n] = Proposal{Box: boxes[i], Score: scores[i]}
	}
	return out, nil
}

// scored is a candidate: its score and its index, which breaks ties so the
// order is the same on every run.
type scored struct {
	v float32
	i int
}

func better(a, b scored) bool { return a.v > b.v || (a.v == b.v && a.i < b.i) }

// topK returns the k best candidates, best first (all of them when k <= 0
// or there are fewer). Quickselect first, so only k values get sorted: a P2
// map at 320x320 has 19200 anchors for 500 kept.
func topK(c []scored, k int) []scored {
	if k > 0 && len(c) > k {
		lo, hi := 0, len(c)-1
		for lo < hi {
			// Median of three as the pivot keeps sorted input linear.
			mid := lo + (hi-lo)/2
			if better(c[mid], c[lo]) {
				c[mid], c[lo] = c[lo], c[mid]
			}
			if better(c[hi], c[lo]) {
				c[hi], c[lo] = c[lo], c[hi]
			}
			if better(c[hi], c[mid]) {
				c[hi], c[mid] = c[mid], c[hi]
			}
			pivot := c[mid]
			i, j := lo, hi
			for i <= j {
				for better(c[i], pivot) {
					i++
				}
				for better(pivot, c[j]) {
					j--
				}
				if i <= j {
					c[i], c[j] = c[j], c[i]
					i++
					j--
				}
			}
			if k-1 <= j {
				hi = j
			} else if k-1 >= i {
				lo = i
			} else {
				break
			}
		}
		c = c[:k]
	}
	slices.SortFunc(c, func(a, b scored) int {
		if better(a, b) {
			return -1
		}
		if better(b, a) {
			return 1
		}
		return 0
	})
	return c
}

func sigmoid(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}
