package track

import (
	"errors"
	"fmt"
)

// Settings are one camera's tracking thresholds. Start from DefaultSettings
// and override per camera: a zero Settings is not valid (a zero MinHits or
// score band would make every flicker a track).
//
// The defaults are ByteTrack's (its MOT17 settings) except MinHits, which
// ByteTrack fixes at 2: events are sent on confirmation, and one more frame
// of evidence keeps a single-frame false positive pair from becoming a
// "new" event.
type Settings struct {
	// HighScore splits detections: at or above it they take part in the
	// first association and may start tracks. Default 0.5.
	HighScore float32 `yaml:"high_score" json:"high_score"`
	// LowScore is the floor of the second association: detections in
	// [LowScore, HighScore) only extend tracks that were seen in the
	// previous frame; below LowScore they are ignored. The cascade's score
	// threshold must be at or below it, or the second association sees
	// nothing. Default 0.1.
	LowScore float32 `yaml:"low_score" json:"low_score"`
	// NewTrackScore is the least score of an unmatched detection that
	// starts a tentative track; above HighScore so that borderline
	// detections extend tracks but do not start them. Default 0.6.
	NewTrackScore float32 `yaml:"new_track_score" json:"new_track_score"`
	// MatchIoU is the least box IoU between a track's predicted box and a
	// high-score detection for them to match (ByteTrack's match_thresh 0.8
	// as a cost). Low, because the prediction of a track unseen for a while
	// drifts. Default 0.2.
	MatchIoU float32 `yaml:"match_iou" json:"match_iou"`
	// LowMatchIoU is the least IoU in the second association: stricter,
	// since low-score detections are often duplicates or background.
	// Default 0.5.
	LowMatchIoU float32 `yaml:"low_match_iou" json:"low_match_iou"`
	// TentativeMatchIoU is the least IoU for a tentative track to take a
	// detection: without a velocity yet, its prediction is its last box.
	// Default 0.3.
	TentativeMatchIoU float32 `yaml:"tentative_match_iou" json:"tentative_match_iou"`
	// MinHits is the number of consecutive matched frames after which a
	// tentative track is confirmed, gets its id and is reported as new.
	// A tentative track that misses one frame is dropped. Default 3.
	MinHits int `yaml:"min_hits" json:"min_hits"`
	// MaxMisses is how many consecutive frames a confirmed track survives
	// without a detection (occlusion, a missed detection); the next miss
	// ends it. In frames, not seconds, like ByteTrack's track_buffer: 30 is
	// 1 s at 30 fps, 6 s at 5 fps. Default 30.
	MaxMisses int `yaml:"max_misses" json:"max_misses"`
	// MaskTieBreak weighs mask IoU in the matching cost, which is
	// (1 - box IoU) + MaskTieBreak*(1 - mask IoU): small, so that masks
	// only decide between candidates whose box IoUs are within about
	// MaskTieBreak of each other (two crossing objects), never against box
	// IoU. 0 turns masks off. Default 0.05.
	MaskTieBreak float32 `yaml:"mask_tie_break" json:"mask_tie_break"`
}

// DefaultSettings returns the documented defaults.
func DefaultSettings() Settings {
	return Settings{
		HighScore:         0.5,
		LowScore:          0.1,
		NewTrackScore:     0.6,
		MatchIoU:          0.2,
		LowMatchIoU:       0.5,
		TentativeMatchIoU: 0.3,
		MinHits:           3,
		MaxMisses:         30,
		MaskTieBreak:      0.05,
	}
}

// ErrSettings is wrapped by every error Validate returns.
var ErrSettings = errors.New("invalid tracking settings")

// Validate reports the first setting out of its range, naming it.
func (s Settings) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrSettings}, a...)...)
	}
	unit := func(name string, v float32) error {
		if !(v >= 0 && v <= 1) {
			return bad("%s %v is not in [0, 1]", name, v)
		}
		return nil
	}
	for _, c := range []struct {
		name string
		v    float32
	}{
		{"high_score", s.HighScore}, {"low_score", s.LowScore}, {"new_track_score", s.NewTrackScore},
		{"match_iou", s.MatchIoU}, {"low_match_iou", s.LowMatchIoU},
		{"tentative_match_iou", s.TentativeMatchIoU}, {"mask_tie_break", s.MaskTieBreak},
	} {
		if err := unit(c.name, c.v); err != nil {
			return err
		}
	}
	switch {
	case s.LowScore > s.HighScore:
		return bad("low_score %v is above high_score %v", s.LowScore, s.HighScore)
	case s.NewTrackScore < s.HighScore:
		return bad("new_track_score %v is below high_score %v: only high-score detections start tracks", s.NewTrackScore, s.HighScore)
	case s.MatchIoU <= 0 || s.LowMatchIoU <= 0 || s.TentativeMatchIoU <= 0:
		return bad("match IoUs must be above 0 (a zero IoU would match disjoint boxes)")
	case s.MinHits < 1:
		return bad("min_hits %d is below 1", s.MinHits)
	case s.MaxMisses < 0:
		return bad("max_misses %d is negative", s.MaxMisses)
	}
	return nil
}
