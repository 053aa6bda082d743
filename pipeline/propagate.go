package pipeline

import (
	"time"

	"github.com/htcstream/htcstream/track"
)

// plainTracker is the tracker of a stream whose model skips frames but
// which has no events: only what propagation needs, the tracks and their
// ids.
type plainTracker struct{ tr *track.Tracker }

func newPlainTracker() (*plainTracker, error) {
	// Every detection the stream keeps starts a track: nothing here waits
	// for a confirmed event, and a detection without a track would show
	// on its keyframe only (the stream's filter has already dropped what
	// it does not want).
	s := track.DefaultSettings()
	s.LowScore, s.HighScore, s.NewTrackScore = 0, 0, 0
	tr, err := track.NewTracker(s)
	if err != nil {
		return nil, err
	}
	return &plainTracker{tr: tr}, nil
}

// Track implements Tracker.
func (p *plainTracker) Track(o *Output) {
	p.tr.Update(o.Frame.Seq, o.Frame.PTS, o.Result.Detections)
}

// Drawn implements Tracker.
func (p *plainTracker) Drawn(*Output) {}

// End implements Tracker.
func (p *plainTracker) End() { p.tr.EndAll() }

// Predict implements Predictor.
func (p *plainTracker) Predict(pts time.Duration) []track.Predicted { return p.tr.Predict(pts) }
