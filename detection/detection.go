// Package detection holds the one form an instance takes from the model to
// every output: the cascade makes it, the tracker gives it a track id, the
// overlay draws it, the JSON lines, events and the live view write it.
// It is a leaf (it imports nothing of the project) so that every stage can
// share it without importing another stage.
package detection

import "fmt"

// Detection is one instance found in a frame.
type Detection struct {
	// Box is in frame pixels.
	Box   Box
	Score float32
	// Label is the thing class, 0..C-1: the model's class index.
	Label int
	// Class is Label's name (the bundle's thing classes), set by the model;
	// the outputs write it.
	Class string
	// StageScores holds each cascade stage's own score for Label, kept for
	// inspection of the cascade.
	StageScores []float32
	// Mask is the instance's binary mask; empty (W = 0) when there is none.
	// Once a detection has left the model nothing may modify Bits: the
	// tracker keeps a track's last mask to break ties, and the sinks of a
	// stream share it.
	Mask Mask
	// TrackID is the confirmed track the instance belongs to on a tracked
	// stream; 0 = none (untracked stream, or a track not yet confirmed).
	TrackID uint64
	// Propagated is true when a tracker carried the instance to a frame the
	// model did not see.
	Propagated bool
}

// ClassName is the name of class label among names, or "class N" when the
// names do not reach it.
func ClassName(label int, names []string) string {
	if label >= 0 && label < len(names) {
		return names[label]
	}
	return fmt.Sprintf("class %d", label)
}
