package pipeline

import (
	"fmt"
	"slices"

	"github.com/htcstream/htcstream/cascade"
)

// NewFilter is a camera's detection filter: its score threshold, its class
// list, each label's own threshold and the smallest box area. It returns
// nil when the filter would keep everything the model returns (the model
// already applies minScore). Labels it does not know are configuration
// errors, so a typo never silently filters everything out.
func NewFilter(cam CameraConfig, classes []string, minScore float64) (ResultFilter, error) {
	known := func(label string) error {
		if !slices.Contains(classes, label) {
			return fmt.Errorf("%w: %q is not a class of the model (%d classes: %s ...)", ErrConfig, label, len(classes), classes[0])
		}
		return nil
	}
	keep := make([]bool, len(classes))
	minOf := make([]float32, len(classes))
	for i := range classes {
		keep[i] = len(cam.Classes) == 0
		minOf[i] = float32(cam.ScoreThreshold)
	}
	for _, c := range cam.Classes {
		if err := known(c); err != nil {
			return nil, err
		}
		keep[slices.Index(classes, c)] = true
	}
	for label, t := range cam.Thresholds {
		if err := known(label); err != nil {
			return nil, err
		}
		minOf[slices.Index(classes, label)] = float32(t)
	}
	trivial := len(cam.Classes) == 0 && cam.MinArea == 0 && len(cam.Thresholds) == 0 && cam.ScoreThreshold <= minScore
	if trivial {
		return nil, nil
	}
	minArea := float32(cam.MinArea)
	return func(r *cascade.Result) {
		kept := r.Detections[:0]
		for _, d := range r.Detections {
			if d.Label < 0 || d.Label >= len(classes) || !keep[d.Label] || d.Score < minOf[d.Label] {
				continue
			}
			if minArea > 0 && d.Box.Width()*d.Box.Height() < minArea {
				continue
			}
			kept = append(kept, d)
		}
		r.Detections = kept
	}, nil
}
