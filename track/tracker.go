package track

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/htcstream/htcstream/detection"
)

// Track is a confirmed track as of one Update: what an event needs to say
// about it. It is a copy; the tracker does not change it later.
type Track struct {
	// ID is stable for the track's life and unique within its Tracker,
	// counted from 1 in order of confirmation (so "circle #12" is the 12th
	// object this camera confirmed). IDs are per Tracker: per stream.
	ID      uint64
	ClassID int
	Label   string
	// FirstSeq/FirstSeen are the frame and pts of the track's first
	// detection, tentative frames included: when the object appeared, not
	// when the tracker became sure of it.
	FirstSeq  int64
	FirstSeen time.Duration
	// LastSeq/LastSeen are those of its last matched detection.
	LastSeq  int64
	LastSeen time.Duration
	// Hits counts the frames with a matched detection, tentative ones
	// included; Misses the consecutive frames without one until now.
	Hits, Misses int
	// Box and Score are the last matched detection's (not the motion
	// model's prediction: an event reports what was seen).
	Box   [4]float32
	Score float32
	// BestScore is the highest score since confirmation, from the frame
	// BestSeq at BestPTS with box BestBox. It only counts frames from
	// confirmation on, because those are the frames where the caller saw
	// the track's id and can have kept an image or mask of.
	BestScore float32
	BestSeq   int64
	BestPTS   time.Duration
	BestBox   [4]float32
	// Improved says this Update set a new BestScore: the current frame is
	// the track's best so far, the moment to keep a snapshot and mask.
	Improved bool
	// Det is the index of the track's detection in this Update's input, or
	// -1 when it was not seen in this frame.
	Det int
}

// Result is what one Update found. Slices are new for every call; the
// caller may keep them.
type Result struct {
	// New are the tracks confirmed in this frame (events' "new").
	New []Track
	// Updated are the tracks confirmed before and matched in this frame;
	// the events side decides which of these changes are worth an event.
	Updated []Track
	// Ended are the tracks that missed more than MaxMisses frames and are
	// gone (events' "end"). Their Last* fields say when they were last
	// seen; the current frame is when the tracker gave up.
	Ended []Track
}

// state is a track's place in its life.
type state uint8

const (
	tentative state = iota // fewer than MinHits hits, no id yet
	confirmed              // has an id; may be missing for up to MaxMisses frames
)

// trk is the tracker's own, mutable track.
type trk struct {
	Track
	state    state
	kf       kalman
	pred     [4]float32     // predicted box for this frame
	mask     detection.Mask // last matched detection's mask
	stages   []float32      // and its per-stage scores (the caller's; not modified)
	maskArea int            // set pixels of mask; -1 until counted
	maskBox  [4]float32     // box of the detection the mask came from
	key      uint64         // Predicted.Key
}

// Tracker follows the instances of one stream. Create it with NewTracker.
type Tracker struct {
	s       Settings
	tracks  []*trk // tentative and confirmed, in creation order
	nextID  uint64
	nextKey uint64

	// Frame timing: prediction steps are measured in nominal frame
	// intervals, so a source that drops frames predicts across the gap.
	started  bool
	lastPTS  time.Duration
	interval float64 // nominal frame interval in ns, 0 until known

	as    assigner
	pairs []pairCost
}

// NewTracker returns a tracker with the given settings, or the Validate
// error.
func NewTracker(s Settings) (*Tracker, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &Tracker{s: s}, nil
}

// Settings returns the tracker's settings.
func (t *Tracker) Settings() Settings { return t.s }

// Update advances the tracker by one frame: seq and pts identify the frame
// (pts must grow from frame to frame; a jump back, as when a file loops,
// counts as one frame), dets are its detections in any order. Detections
// with a non-finite or empty box are ignored. Every frame of the stream
// must be passed, also those without detections, since misses are counted
// in frames. Update sets each detection's TrackID: the confirmed track it
// belongs to, or 0 (ignored, or a tentative track's). The tracker keeps the
// mask of each track's last matched detection until the next Update, to
// break ties between crossing objects, so the caller must not modify a
// mask's Bits after passing it.
func (t *Tracker) Update(seq int64, pts time.Duration, dets []detection.Detection) Result {
	dt := t.step(pts)
	var res Result
	for i := range dets {
		dets[i].TrackID = 0
	}

	for _, tr := range t.tracks {
		tr.kf.predict(dt, tr.Misses > 0)
		tr.pred = tr.kf.box()
		tr.Det = -1
		tr.Improved = false
	}

	var high, low []int
	for i := range dets {
		d := &dets[i]
		if !validBox(d.Box.XYXY()) || !(d.Score >= t.s.LowScore) {
			continue
		}
		if d.Score >= t.s.HighScore {
			high = append(high, i)
		} else {
			low = append(low, i)
		}
	}
	var conf, tent []*trk
	for _, tr := range t.tracks {
		if tr.state == confirmed {
			conf = append(conf, tr)
		} else {
			tent = append(tent, tr)
		}
	}

	// 1. High-score detections against every confirmed track, seen last
	// frame or missing.
	restConf, restHigh := t.associate(conf, high, dets, t.s.MatchIoU)
	// 2. Low-score detections against the confirmed tracks left that were
	// seen in the previous frame: an object that just dropped in score is
	// likely occluded; a track already missing has a drifting prediction
	// that a stray low-score box would hijack.
	var recent []*trk
	for _, tr := range restConf {
		if tr.Misses == 0 {
			recent = append(recent, tr)
		}
	}
	t.associate(recent, low, dets, t.s.LowMatchIoU)
	// 3. The high-score detections left against tentative tracks.
	_, restHigh = t.associate(tent, restHigh, dets, t.s.TentativeMatchIoU)

	// Bookkeeping: matched tracks were updated in associate.
	kept := t.tracks[:0]
	for _, tr := range t.tracks {
		if tr.Det >= 0 {
			t.hit(tr, seq, pts, &dets[tr.Det])
			switch {
			case tr.state == tentative && tr.Hits >= t.s.MinHits:
				t.confirm(tr, seq, pts)
				res.New = append(res.New, tr.Track)
			case tr.state == confirmed:
				t.best(tr, seq, pts)
				res.Updated = append(res.Updated, tr.Track)
			}
			if tr.state == confirmed {
				dets[tr.Det].TrackID = tr.ID
			}
			kept = append(kept, tr)
			continue
		}
		if tr.state == tentative {
			continue // must be seen in consecutive frames
		}
		tr.Misses++
		if tr.Misses > t.s.MaxMisses {
			tr.mask = detection.Mask{}
			res.Ended = append(res.Ended, tr.Track)
			continue
		}
		kept = append(kept, tr)
	}
	for i := len(kept); i < len(t.tracks); i++ {
		t.tracks[i] = nil
	}
	t.tracks = kept

	// 4. Unmatched high-score detections start tracks.
	for _, i := range restHigh {
		d := &dets[i]
		if d.Score < t.s.NewTrackScore {
			continue
		}
		t.nextKey++
		tr := &trk{state: tentative, kf: newKalman(d.Box.XYXY()), key: t.nextKey}
		tr.ClassID, tr.Label = d.Label, d.Class
		tr.FirstSeq, tr.FirstSeen = seq, pts
		tr.Det = i
		t.hit(tr, seq, pts, d)
		if tr.Hits >= t.s.MinHits {
			t.confirm(tr, seq, pts)
			res.New = append(res.New, tr.Track)
			dets[i].TrackID = tr.ID
		}
		t.tracks = append(t.tracks, tr)
	}
	sortByID(res.New)
	sortByID(res.Updated)
	sortByID(res.Ended)
	return res
}

// EndAll ends every confirmed track, as when the stream stops, and returns
// them, so that every track reported new is also reported ended. The
// tracker then starts afresh (ids keep counting).
func (t *Tracker) EndAll() []Track {
	var out []Track
	for _, tr := range t.tracks {
		if tr.state == confirmed {
			tr.Det, tr.Improved = -1, false
			out = append(out, tr.Track)
		}
	}
	t.tracks = nil
	t.started = false
	sortByID(out)
	return out
}

// Active returns the confirmed tracks, missing ones included, ordered by id.
func (t *Tracker) Active() []Track {
	var out []Track
	for _, tr := range t.tracks {
		if tr.state == confirmed {
			out = append(out, tr.Track)
		}
	}
	sortByID(out)
	return out
}

// step returns how many nominal frame intervals passed since the last
// Update, at least 1, and learns the nominal interval from the gaps that
// are not drops.
func (t *Tracker) step(pts time.Duration) float64 {
	defer func() { t.lastPTS, t.started = pts, true }()
	if !t.started {
		return 1
	}
	d := float64(pts - t.lastPTS)
	if d <= 0 {
		return 1
	}
	switch {
	case t.interval == 0 || d < t.interval:
		// The shortest gap seen is the frame interval (gaps longer than
		// it hold drops); pts jitter makes it a little short, which only
		// rounds the steps up to 1 below.
		t.interval = d
	case d < 1.5*t.interval:
		t.interval += (d - t.interval) / 16 // follow slow rate changes
	}
	return max(1, d/t.interval)
}

// associate matches tracks to the detections at idx by box IoU at or above
// minIoU, same class only, and records the match in the track (Det) and
// its filter. It returns the tracks and detection indices left over.
func (t *Tracker) associate(tracks []*trk, idx []int, dets []detection.Detection, minIoU float32) ([]*trk, []int) {
	if len(tracks) == 0 || len(idx) == 0 {
		return tracks, idx
	}
	pairs := t.pairs[:0]
	for r, tr := range tracks {
		for c, i := range idx {
			d := &dets[i]
			if d.Label != tr.ClassID {
				continue
			}
			iou := boxIoU(tr.pred, d.Box.XYXY())
			if iou >= float64(minIoU) && iou > 0 {
				pairs = append(pairs, pairCost{r, c, 1 - iou})
			}
		}
	}
	t.pairs = pairs
	tie := float64(t.s.MaskTieBreak)
	if tie > 0 {
		t.maskCosts(tracks, idx, dets, pairs, tie)
	}
	limit := 1 - float64(minIoU) + tie + 1e-6
	rows := t.as.solve(len(tracks), len(idx), pairs, limit)
	var restT []*trk
	taken := make([]bool, len(idx))
	for r, c := range rows {
		if c < 0 {
			restT = append(restT, tracks[r])
			continue
		}
		taken[c] = true
		tracks[r].Det = idx[c]
	}
	var restD []int
	for c, i := range idx {
		if !taken[c] {
			restD = append(restD, i)
		}
	}
	return restT, restD
}

// maskCosts adds the mask term to the cost of the pairs that compete (a
// track with two candidate detections or a detection with two candidate
// tracks); an uncontested pair matches whatever its mask says, so its mask
// IoU is not computed. Where a mask is missing, box IoU stands in for it.
func (t *Tracker) maskCosts(tracks []*trk, idx []int, dets []detection.Detection, pairs []pairCost, tie float64) {
	nr := make([]int, len(tracks))
	nc := make([]int, len(idx))
	for _, p := range pairs {
		nr[p.r]++
		nc[p.c]++
	}
	var detArea []int // by column, counted when first needed
	for k := range pairs {
		p := &pairs[k]
		boxCost := p.cost
		tr, d := tracks[p.r], &dets[idx[p.c]]
		if (nr[p.r] < 2 && nc[p.c] < 2) || !maskOK(&tr.mask) || !maskOK(&d.Mask) {
			p.cost += tie * boxCost
			continue
		}
		if tr.maskArea < 0 {
			tr.maskArea = maskArea(&tr.mask)
		}
		if detArea == nil {
			detArea = make([]int, len(idx))
			for i := range detArea {
				detArea[i] = -1
			}
		}
		if detArea[p.c] < 0 {
			detArea[p.c] = maskArea(&d.Mask)
		}
		// Move the old mask by how far the prediction moved its box.
		dx := int(math.Round(float64(tr.pred[0]+tr.pred[2]-tr.maskBox[0]-tr.maskBox[2]) / 2))
		dy := int(math.Round(float64(tr.pred[1]+tr.pred[3]-tr.maskBox[1]-tr.maskBox[3]) / 2))
		m := maskIoU(&tr.mask, tr.maskArea, dx, dy, &d.Mask, detArea[p.c])
		p.cost += tie * (1 - m)
	}
}

// hit folds a matched detection into a track.
func (t *Tracker) hit(tr *trk, seq int64, pts time.Duration, d *detection.Detection) {
	if tr.Hits > 0 {
		tr.kf.update(d.Box.XYXY())
	}
	tr.Hits++
	tr.Misses = 0
	tr.LastSeq, tr.LastSeen = seq, pts
	tr.Box, tr.Score, tr.stages = d.Box.XYXY(), d.Score, d.StageScores
	if maskOK(&d.Mask) {
		// Kept for the mask tie-break and for Predict; the area is counted
		// only if the tie-break ever needs it.
		tr.mask, tr.maskArea, tr.maskBox = d.Mask, -1, d.Box.XYXY()
	} else {
		tr.mask = detection.Mask{}
	}
}

func (t *Tracker) confirm(tr *trk, seq int64, pts time.Duration) {
	t.nextID++
	tr.ID = t.nextID
	tr.state = confirmed
	tr.BestScore = -1
	t.best(tr, seq, pts)
}

func (t *Tracker) best(tr *trk, seq int64, pts time.Duration) {
	if tr.Score > tr.BestScore {
		tr.BestScore, tr.BestSeq, tr.BestPTS, tr.BestBox = tr.Score, seq, pts, tr.Box
		tr.Improved = true
	}
}

func sortByID(ts []Track) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
}

// String is for logs and test failures.
func (tr Track) String() string {
	return fmt.Sprintf("#%d %s [%.0f %.0f %.0f %.0f] hits %d misses %d", tr.ID, tr.Label,
		tr.Box[0], tr.Box[1], tr.Box[2], tr.Box[3], tr.Hits, tr.Misses)
}
