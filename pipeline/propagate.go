package pipeline

import (
	"fmt"
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

// Propagation is how a stream's objects move on the frames the model did
// not see.
type Propagation string

const (
	// PropagateBox moves each object's box as the tracker's Kalman filter
	// predicts (live timing), or in a straight line between the keyframes
	// on both sides (smooth), the mask scaled and moved with it.
	PropagateBox Propagation = "box"
	// PropagateFlow follows each object by sparse Lucas-Kanade optical
	// flow on its own region (package flow): corners on the object,
	// their median move, the mask moved with the box. In smooth timing
	// the flow's drift from the next keyframe's box is taken out as time
	// goes. Where too few corners are followed, the box moves as with
	// PropagateBox. The default (""): on the sample it keeps 0.08 more
	// mask AP than box in live timing at interval 3, 0.01 at interval 10
	// in smooth timing, for about 1 ms a frame at 1080p with 20 tracks
	// (docs/benchmarks.md).
	PropagateFlow Propagation = "flow"
)

func (p Propagation) validate() error {
	switch p {
	case "", PropagateBox, PropagateFlow:
		return nil
	}
	return fmt.Errorf("%w: propagation %q: want box or flow", ErrConfig, p)
}
