package events

import (
	"log/slog"
	"slices"
	"time"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/track"
)

// StageConfig configures one camera's tracker stage.
type StageConfig struct {
	Camera  string
	Classes []string
	// Tracker: the tracker's settings.
	Tracker track.Settings
	// UpdateInterval: an update about a better score goes at most this
	// often per track (zone changes go at once).
	UpdateInterval time.Duration
	// Labels: only tracks of these labels make events (empty: all).
	Labels []string
	// RequireZones: only tracks that entered one of these make events
	// (empty: all).
	RequireZones []string
	// MinDuration: only tracks seen this long make events.
	MinDuration time.Duration
	// Zones are the camera's zones by name.
	Zones map[string]Zone
	// ZoneOverlap > 0 puts a track in a zone when at least this share of
	// its mask is inside; 0 tests one point, its box's bottom centre.
	ZoneOverlap float64
	// Keep is the camera's own filter (classes, thresholds, area), applied
	// after tracking to what is drawn and written; nil keeps everything.
	Keep func(d *detection.Detection) bool
	// Snapshots keeps the best frames (nil: none) when KeepSnapshots;
	// Clean snapshots the frame as decoded instead of as drawn.
	Snapshots     SnapshotSaver
	KeepSnapshots bool
	Clean         bool
	// SnapshotURL and ClipURL: as WorkerConfig's.
	SnapshotURL, ClipURL string
	// Publishers get every event, in order.
	Publishers []Publisher
	// CountEvent hears of every event by type, CountSnapshots of every
	// snapshot by result (for /metrics); nil: not counted.
	CountEvent     func(typ string)
	CountSnapshots func(result string, n int)
	Logger         *slog.Logger
}

// Frame is what the stage needs of one frame of its stream.
type Frame struct {
	Seq      int64
	PTS      time.Duration
	Captured time.Time
	Width    int
	Height   int
	// RGB is the frame as decoded (snapshots of Clean stages copy it).
	RGB []byte
	// Detections are the model's (or the propagated) detections; Track
	// sets their TrackID and may drop some (Keep).
	Detections []detection.Detection
}

// EventStage is a camera's Tracker: it runs the track package's tracker on
// the stream's output goroutine, gives each detection its track id, and
// turns tracks into events:
//
//   - new when a track is confirmed and passes the event filter (labels,
//     zones entered, min duration; a track that passes later gets its new
//     then);
//   - update when the zones it is in change (at once), or when its best
//     score went up, at most every UpdateInterval of stream time;
//   - end when the track dies, and for every live track at the stream's
//     end, so that every new has its end.
//
// Building events is cheap and stays on the output goroutine; the JPEG
// snapshots, the masks' RLE and the publishing happen on the stage's
// Worker, behind a queue that never blocks the stream.
type Stage struct {
	cfg    StageConfig
	tr     *track.Tracker
	zones  []string // names, sorted
	labels []bool   // by class id; nil: all
	snap   bool

	tracks map[uint64]*trackState
	clock  [256]frameTime // seq -> wall clock of recent frames
	job    *Job           // this frame's, between Track and Drawn
	w      *Worker
}

type frameTime struct {
	seq int64
	at  time.Time
}

// trackState is what the stage remembers of a confirmed track.
type trackState struct {
	id        string // the event id
	firstWall time.Time
	entered   []string
	in        []string // zones now
	sent      bool     // new was sent
	sentAt    time.Duration
	sentBest  float32
	mask      detection.Mask // best frame's
	stages    []float32
	w, h      int
}

// NewStage makes a camera's stage and starts its worker; End stops it.
// The caller has checked cfg.Labels against cfg.Classes.
func NewStage(cfg StageConfig) (*Stage, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CountEvent == nil {
		cfg.CountEvent = func(string) {}
	}
	tr, err := track.NewTracker(cfg.Tracker)
	if err != nil {
		return nil, err
	}
	zones := make([]string, 0, len(cfg.Zones))
	for name := range cfg.Zones {
		zones = append(zones, name)
	}
	slices.Sort(zones)
	s := &Stage{cfg: cfg, tr: tr, zones: zones, tracks: map[uint64]*trackState{},
		snap: cfg.Snapshots != nil && cfg.KeepSnapshots}
	if len(cfg.Labels) > 0 {
		s.labels = make([]bool, len(cfg.Classes))
		for _, l := range cfg.Labels {
			if k := slices.Index(cfg.Classes, l); k >= 0 {
				s.labels[k] = true
			}
		}
	}
	s.w = NewWorker(WorkerConfig{Camera: cfg.Camera, Snapshots: cfg.Snapshots, SnapshotURL: cfg.SnapshotURL, ClipURL: cfg.ClipURL,
		Publishers: cfg.Publishers, Logger: cfg.Logger, CountSnapshots: cfg.CountSnapshots})
	return s, nil
}

// Track follows f's detections: each gets its track id (TrackID), the
// camera's Keep filter drops what it does not keep (from f.Detections),
// and the frame's events are built. Call Drawn next, with the frame as
// drawn.
func (s *Stage) Track(f *Frame) {
	s.clock[uint64(f.Seq)%uint64(len(s.clock))] = frameTime{f.Seq, f.Captured}
	res := s.tr.Update(f.Seq, f.PTS, f.Detections)
	job := &Job{Width: f.Width, Height: f.Height}
	for _, t := range res.New {
		first := s.wall(f, t.FirstSeq, t.FirstSeen)
		s.tracks[t.ID] = &trackState{id: EventID(s.cfg.Camera, first, int64(t.ID)), firstWall: first}
		s.follow(f, t, job)
	}
	for _, t := range res.Updated {
		s.follow(f, t, job)
	}
	for _, t := range res.Ended {
		s.end(f, t, job)
	}

	if s.cfg.Keep != nil {
		kept := f.Detections[:0]
		for i := range f.Detections {
			if s.cfg.Keep(&f.Detections[i]) {
				kept = append(kept, f.Detections[i])
			}
		}
		f.Detections = kept
	}
	if len(job.Snapshots) > 0 && s.cfg.Clean {
		job.RGB = slices.Clone(f.RGB) // drawing happens in place
	}
	s.job = job
}

// Drawn hands the frame's job to the worker; rgb, the frame as drawn, is
// the annotated snapshot.
func (s *Stage) Drawn(rgb []byte) {
	job := s.job
	s.job = nil
	if job == nil || (len(job.Snapshots) == 0 && len(job.Events) == 0 && len(job.Forget) == 0) {
		return
	}
	if len(job.Snapshots) > 0 && job.RGB == nil {
		job.RGB = rgb // nothing writes the frame after drawing
	}
	s.w.Push(job)
}

// End ends every track still alive; the worker sends what it has and
// stops.
func (s *Stage) End() {
	job := &Job{}
	if s.job != nil { // a frame tracked but never drawn (hard stop)
		job = s.job
		job.Snapshots, job.RGB = nil, nil
		s.job = nil
	}
	for _, t := range s.tr.EndAll() {
		s.end(nil, t, job)
	}
	if len(job.Events) > 0 || len(job.Forget) > 0 {
		s.w.Push(job)
	}
	s.w.Close()
}

// wall is the wall-clock time of frame seq: remembered for recent frames,
// else estimated from o's by the pts difference.
func (s *Stage) wall(f *Frame, seq int64, pts time.Duration) time.Time {
	if ft := s.clock[uint64(seq)%uint64(len(s.clock))]; ft.seq == seq && !ft.at.IsZero() {
		return ft.at
	}
	if f == nil {
		return time.Now()
	}
	return f.Captured.Add(pts - f.PTS)
}

// follow updates a confirmed track seen in this frame and decides its
// event.
func (s *Stage) follow(f *Frame, t track.Track, job *Job) {
	st := s.tracks[t.ID]
	if st == nil {
		return
	}
	zonesChanged := false
	if len(s.zones) > 0 {
		x := float64(t.Box[0]+t.Box[2]) / 2 / float64(f.Width)
		y := float64(t.Box[3]) / float64(f.Height)
		var mask *detection.Mask
		if s.cfg.ZoneOverlap > 0 && t.Det >= 0 && t.Det < len(f.Detections) && f.Detections[t.Det].Mask.W > 0 {
			mask = &f.Detections[t.Det].Mask
		}
		var in []string
		for _, name := range s.zones {
			z := s.cfg.Zones[name]
			if mask != nil && z.maskShare(mask, f.Width, f.Height) >= s.cfg.ZoneOverlap ||
				mask == nil && z.contains(x, y) {
				in = append(in, name)
				if !slices.Contains(st.entered, name) {
					st.entered = append(st.entered, name)
				}
			}
		}
		zonesChanged = !slices.Equal(in, st.in)
		st.in = in
	}
	if t.Improved && t.Det >= 0 && t.Det < len(f.Detections) {
		d := &f.Detections[t.Det]
		st.mask = d.Mask
		st.stages, st.w, st.h = d.StageScores, f.Width, f.Height
		if s.snap && s.wanted(t, st, false) {
			job.Snapshots = append(job.Snapshots, st.id)
		}
	}
	switch {
	case !st.sent:
		if s.wanted(t, st, true) {
			st.sent = true
			s.emit(f, t, st, EventNew, job)
			if s.snap && !t.Improved {
				// passed the filter late: its best frame is gone, this one
				// will do until a better one comes
				job.Snapshots = append(job.Snapshots, st.id)
			}
		}
	case zonesChanged,
		t.BestScore > st.sentBest && f.PTS-st.sentAt >= s.cfg.UpdateInterval:
		s.emit(f, t, st, EventUpdate, job)
	}
}

// wanted says whether a track passes the event filter; with full false
// only the label is checked (zones and duration can still come).
func (s *Stage) wanted(t track.Track, st *trackState, full bool) bool {
	if s.labels != nil && (t.ClassID < 0 || t.ClassID >= len(s.labels) || !s.labels[t.ClassID]) {
		return false
	}
	if !full {
		return true
	}
	if zs := s.cfg.RequireZones; len(zs) > 0 && !slices.ContainsFunc(zs, func(z string) bool { return slices.Contains(st.entered, z) }) {
		return false
	}
	return t.LastSeen-t.FirstSeen >= s.cfg.MinDuration
}

func (s *Stage) end(f *Frame, t track.Track, job *Job) {
	st := s.tracks[t.ID]
	delete(s.tracks, t.ID)
	if st == nil {
		return
	}
	if !st.sent {
		// no event ever: its best frame, held by the worker, goes
		if s.snap && job != nil {
			job.Forget = append(job.Forget, st.id)
		}
		return
	}
	s.emit(f, t, st, EventEnd, job)
}

// emit adds an event about t to the job.
func (s *Stage) emit(f *Frame, t track.Track, st *trackState, typ EventType, job *Job) {
	ev := Event{
		Type: typ, ID: st.id, Camera: s.cfg.Camera, TrackID: int64(t.ID), Label: t.Label, ClassID: t.ClassID,
		FirstSeen: st.firstWall, LastSeen: s.wall(f, t.LastSeq, t.LastSeen), FirstPTS: t.FirstSeen, LastPTS: t.LastSeen,
		Score: t.Score, Box: t.Box, BestScore: t.BestScore, BestBox: t.BestBox, BestPTS: t.BestPTS,
		StageScores: st.stages, Width: st.w, Height: st.h,
		EnteredZones: slices.Clone(st.entered), Zones: slices.Clone(st.in),
	}
	if f != nil {
		st.sentAt = f.PTS
	}
	st.sentBest = t.BestScore
	job.Events = append(job.Events, Pending{Event: ev, Mask: st.mask})
	s.cfg.CountEvent(string(typ))
}

// Predict carries the tracks seen at the last Track to pts (track.Tracker's
// Predict). The camera's own filter (thresholds, classes, area) applies to
// the tracks carried as to the detections drawn: the tracker also follows
// detections below them.
func (s *Stage) Predict(pts time.Duration) []track.Predicted {
	ps := s.tr.Predict(pts)
	if s.cfg.Keep == nil {
		return ps
	}
	kept := ps[:0]
	for _, p := range ps {
		d := detection.Detection{Box: detection.Box{X1: p.Seen[0], Y1: p.Seen[1], X2: p.Seen[2], Y2: p.Seen[3]}, Score: p.Score,
			Label: p.ClassID, Class: p.Label}
		if s.cfg.Keep(&d) {
			kept = append(kept, p)
		}
	}
	return kept
}

// Flush waits until the worker has done every job pushed so far.
func (s *Stage) Flush() { s.w.Flush() }

// Stop closes the worker of a stage that never ran to its End (a run that
// failed before its streams started); after End it does nothing.
func (s *Stage) Stop() {
	if !s.w.Closed() {
		s.w.Close()
	}
}

// Live counts the confirmed tracks the stage follows.
func (s *Stage) Live() int { return len(s.tracks) }
