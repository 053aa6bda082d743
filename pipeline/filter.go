package pipeline

import (
	"fmt"
	"slices"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/detection"
)

// NewFilter is a camera's detection filter: its score threshold, its class
// list, each label's own threshold and the smallest box area. It returns
// nil when the filter would keep everything the model returns (the model
// already applies minScore). Labels it does not know are configuration
// errors, so a typo never silently filters everything out.
func NewFilter(cam CameraConfig, classes []string, minScore float64) (ResultFilter, error) {
	keep, err := newKeeper(cam, classes)
	if err != nil {
		return nil, err
	}
	trivial := len(cam.Classes) == 0 && cam.MinArea == 0 && len(cam.Thresholds) == 0 && cam.ScoreThreshold <= minScore
	if trivial {
		return nil, nil
	}
	return func(r *cascade.Result) {
		kept := r.Detections[:0]
		for i := range r.Detections {
			if keep(&r.Detections[i]) {
				kept = append(kept, r.Detections[i])
			}
		}
		r.Detections = kept
	}, nil
}

// checkLabels reports the first label that is not one of the model's
// classes.
func checkLabels(labels, classes []string) error {
	for _, label := range labels {
		if !slices.Contains(classes, label) {
			return fmt.Errorf("%w: %q is not a class of the model (%d classes: %s ...)", ErrConfig, label, len(classes), classes[0])
		}
	}
	return nil
}

// newKeeper says which detections a camera keeps: of its classes, scoring
// at least its (or the label's) threshold, of at least its minimum area.
func newKeeper(cam CameraConfig, classes []string) (func(d *detection.Detection) bool, error) {
	if err := checkLabels(cam.Classes, classes); err != nil {
		return nil, err
	}
	keep := make([]bool, len(classes))
	minOf := make([]float32, len(classes))
	for i := range classes {
		keep[i] = len(cam.Classes) == 0
		minOf[i] = float32(cam.ScoreThreshold)
	}
	for _, c := range cam.Classes {
		keep[slices.Index(classes, c)] = true
	}
	for label, t := range cam.Thresholds {
		if err := checkLabels([]string{label}, classes); err != nil {
			return nil, err
		}
		minOf[slices.Index(classes, label)] = float32(t)
	}
	minArea := float32(cam.MinArea)
	return func(d *detection.Detection) bool {
		if d.Label < 0 || d.Label >= len(classes) || !keep[d.Label] || d.Score < minOf[d.Label] {
			return false
		}
		return minArea <= 0 || d.Box.Width()*d.Box.Height() >= minArea
	}, nil
}

// trackingFilter is NewFilter for a tracked camera, which must hand the
// tracker the detections down to low: the camera's thresholds are lowered
// to it (the tracker stage applies the camera's own after tracking).
func trackingFilter(cam CameraConfig, classes []string, minScore, low float64) (ResultFilter, error) {
	c := cam
	c.ScoreThreshold = min(c.ScoreThreshold, low)
	if cam.Thresholds != nil {
		c.Thresholds = make(map[string]float64, len(cam.Thresholds))
		for k, v := range cam.Thresholds {
			c.Thresholds[k] = min(v, low)
		}
	}
	return NewFilter(c, classes, minScore)
}
