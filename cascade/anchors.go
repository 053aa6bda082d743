package cascade

import (
	"math"
	"sync"

	"github.com/htcstream/htcstream/detection"
)

// AnchorConfig describes mmdetection's AnchorGenerator for the FPN levels.
type AnchorConfig struct {
	// Strides of the levels (P2..P6: 4, 8, 16, 32, 64); each level's base
	// size is its stride.
	Strides []int
	// Scales are octave scales of the base size (HTC: [8]).
	Scales []float64
	// Ratios are height/width ratios (HTC: [0.5, 1, 2]).
	Ratios []float64
	// CenterOffset places anchor centres at (offset*stride) inside a cell;
	// mmdetection uses 0: the cell's top-left corner.
	CenterOffset float64
}

// PerLocation is the number of anchors at every feature-map location.
func (c AnchorConfig) PerLocation() int { return len(c.Scales) * len(c.Ratios) }

// base returns the anchors of one location at the origin, ratio-major
// (for each ratio, each scale), as mmdetection's scale_major=True orders
// them; computed in float32 as mmdetection does so anchors match bit for bit.
func (c AnchorConfig) base(stride int) []detection.Box {
	size := float32(stride)
	cx := float32(c.CenterOffset) * size
	cy := cx
	out := make([]detection.Box, 0, c.PerLocation())
	for _, r := range c.Ratios {
		hr := float32(math.Sqrt(r))
		wr := 1 / hr
		for _, s := range c.Scales {
			w := size * wr * float32(s)
			h := size * hr * float32(s)
			out = append(out, detection.Box{X1: cx - 0.5*w, Y1: cy - 0.5*h, X2: cx + 0.5*w, Y2: cy + 0.5*h})
		}
	}
	return out
}

// AnchorGrids makes and caches the anchor grids of one model: a stream keeps
// its frame size, so each level's grid is built once. Safe for concurrent use.
type AnchorGrids struct {
	cfg   AnchorConfig
	mu    sync.Mutex
	grids map[[3]int][]detection.Box
}

// NewAnchorGrids returns the grid maker for cfg.
func NewAnchorGrids(cfg AnchorConfig) *AnchorGrids {
	return &AnchorGrids{cfg: cfg, grids: map[[3]int][]detection.Box{}}
}

// Level returns the anchors of level l for an h x w feature map, in the
// order the RPN head's outputs are flattened: location-major (row, then
// column), then anchor. The slice is shared: callers must not modify it.
func (g *AnchorGrids) Level(l, h, w int) []detection.Box {
	key := [3]int{l, h, w}
	g.mu.Lock()
	defer g.mu.Unlock()
	if grid, ok := g.grids[key]; ok {
		return grid
	}
	base := g.cfg.base(g.cfg.Strides[l])
	stride := float32(g.cfg.Strides[l])
	out := make([]detection.Box, 0, h*w*len(base))
	for y := 0; y < h; y++ {
		sy := float32(y) * stride
		for x := 0; x < w; x++ {
			sx := float32(x) * stride
			for _, b := range base {
				out = append(out, detection.Box{X1: b.X1 + sx, Y1: b.Y1 + sy, X2: b.X2 + sx, Y2: b.Y2 + sy})
			}
		}
	}
	g.grids[key] = out
	return out
}
