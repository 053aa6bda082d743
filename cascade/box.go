package cascade

import (
	"math"

	"github.com/htcstream/htcstream/detection"
)

// DeltaCoder decodes (dx, dy, dw, dh) regression deltas onto boxes as
// mmdetection's DeltaXYWHBBoxCoder does (means 0): centre shift by
// delta*std*size, size scaled by exp(delta*std), |dw|, |dh| clamped.
type DeltaCoder struct {
	Stds [4]float32
	// Clip bounds |dw| and |dh| after scaling by Stds; mmdetection uses
	// |log(16/1000)| ≈ 4.135.
	Clip float32
}

// DefaultDeltaClip is mmdetection's wh_ratio_clip bound, |log(16/1000)|.
var DefaultDeltaClip = float32(math.Abs(math.Log(16.0 / 1000.0)))

// Decode applies deltas d to box b.
func (c DeltaCoder) Decode(b detection.Box, d [4]float32) detection.Box {
	px := (b.X1 + b.X2) * 0.5
	py := (b.Y1 + b.Y2) * 0.5
	pw := b.X2 - b.X1
	ph := b.Y2 - b.Y1
	dx := d[0] * c.Stds[0]
	dy := d[1] * c.Stds[1]
	dw := min(max(d[2]*c.Stds[2], -c.Clip), c.Clip)
	dh := min(max(d[3]*c.Stds[3], -c.Clip), c.Clip)
	gw := pw * float32(math.Exp(float64(dw)))
	gh := ph * float32(math.Exp(float64(dh)))
	gx := px + pw*dx
	gy := py + ph*dy
	return detection.Box{X1: gx - gw*0.5, Y1: gy - gh*0.5, X2: gx + gw*0.5, Y2: gy + gh*0.5}
}
