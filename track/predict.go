package track

import (
	"math"
	"time"

	"github.com/htcstream/htcstream/detection"
)

// Predicted is a track seen at the last Update, carried to a frame the
// model did not see.
type Predicted struct {
	// Key identifies the track within its Tracker for its whole life,
	// tentative or confirmed (ID stays 0 until it is confirmed), so that
	// two snapshots can be paired to interpolate between them.
	Key uint64
	// ID is the confirmed track's id, 0 for a tentative track.
	ID      uint64
	ClassID int
	Label   string
	// Score and StageScores are the last matched detection's (StageScores
	// shared with it, not to be modified).
	Score       float32
	StageScores []float32
	// Seen is the last matched detection's box and Mask its mask (W = 0:
	// none; Bits are the caller's, shared, not to be modified).
	Seen [4]float32
	Mask detection.Mask
	// Box is where the motion model puts the object at the pts asked for.
	Box [4]float32
	// Speed is how fast the box moves or resizes, in box sizes per
	// second (its largest coordinate velocity over its larger side); 0
	// until the tracker knows the stream's frame interval.
	Speed float64
}

// Predict returns every track matched at the last Update (confirmed ones
// and tentative ones: a track missing from that frame, or ended, is never
// in it, so a propagated frame shows only what the model saw on its last
// frame), in creation order, each with the box the Kalman filter predicts
// for the frame at pts. It does not change the tracker. A pts before the
// last Update's (a looping file) predicts no motion.
func (t *Tracker) Predict(pts time.Duration) []Predicted {
	dt := 0.0
	if t.started && t.interval > 0 && pts > t.lastPTS {
		dt = float64(pts-t.lastPTS) / t.interval
	}
	out := make([]Predicted, 0, len(t.tracks))
	for _, tr := range t.tracks {
		if tr.Misses > 0 || tr.Det < 0 {
			continue
		}
		kf := tr.kf // a copy: prediction must leave the track as it is
		if dt > 0 {
			kf.predict(dt, false)
		}
		p := Predicted{Key: tr.key, ClassID: tr.ClassID, Label: tr.Label, Score: tr.Score, StageScores: tr.stages,
			Seen: tr.Box, Mask: tr.mask, Box: kf.box()}
		if tr.state == confirmed {
			p.ID = tr.ID
		}
		if maskOK(&tr.mask) && tr.maskBox != tr.Box {
			p.Mask = detection.Mask{} // not this detection's mask
		}
		if t.interval > 0 {
			v := max(math.Abs(tr.kf.cx.v), math.Abs(tr.kf.cy.v), math.Abs(tr.kf.w.v), math.Abs(tr.kf.h.v))
			size := max(tr.kf.w.x, tr.kf.h.x, 1)
			p.Speed = v / size / (t.interval / float64(time.Second))
		}
		out = append(out, p)
	}
	return out
}
