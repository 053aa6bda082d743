package pipeline

import (
	"log/slog"
	"slices"
	"time"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/track"
)

// EventStageConfig configures one camera's tracker stage.
type EventStageConfig struct {
	Camera  string
	Classes []string
	Rules   EventRules
	// Zones are the camera's zones by name.
	Zones map[string]Zone
	// ZoneOverlap > 0 puts a track in a zone when at least this share of
	// its mask is inside; 0 tests one point, its box's bottom centre.
	ZoneOverlap float64
	// Keep is the camera's own filter (classes, thresholds, area), applied
	// after tracking to what is drawn and written; nil keeps everything.
	Keep func(d *detection.Detection) bool
	// Store keeps snapshots (nil: none); Clean snapshots the frame as
	// decoded instead of as drawn.
	Store *record.SnapshotStore
	Clean bool
	// SnapshotURL, when set (the web server serves the store), is the
	// URL path events give their snapshot under: SnapshotURL/camera/file.
	SnapshotURL string
	// ClipURL, when set (the camera records and the web server serves),
	// is the URL path end events give their clip under:
	// ClipURL/camera/<event id>.mp4, cut when first asked for.
	ClipURL string
	// Publishers get every event, in order.
	Publishers []events.Publisher
	Metrics    *Metrics
	Logger     *slog.Logger
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
// events.Worker, behind a queue that never blocks the stream.
type EventStage struct {
	cfg    EventStageConfig
	tr     *track.Tracker
	zones  []string // names, sorted
	labels []bool   // by class id; nil: all
	snap   bool

	tracks map[uint64]*trackState
	clock  [256]frameTime // seq -> wall clock of recent frames
	job    *events.Job    // this frame's, between Track and Drawn
	w      *events.Worker
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

// NewEventStage makes a camera's stage and starts its worker; End stops it.
func NewEventStage(cfg EventStageConfig) (*EventStage, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tr, err := track.NewTracker(cfg.Rules.Tracker)
	if err != nil {
		return nil, err
	}
	if err := checkLabels(cfg.Rules.Labels, cfg.Classes); err != nil {
		return nil, err
	}
	s := &EventStage{cfg: cfg, tr: tr, zones: sortedKeys(cfg.Zones), tracks: map[uint64]*trackState{},
		snap: cfg.Store != nil && cfg.Rules.KeepSnapshots}
	if len(cfg.Rules.Labels) > 0 {
		s.labels = make([]bool, len(cfg.Classes))
		for _, l := range cfg.Rules.Labels {
			s.labels[slices.Index(cfg.Classes, l)] = true
		}
	}
	w := events.WorkerConfig{Camera: cfg.Camera, SnapshotURL: cfg.SnapshotURL, ClipURL: cfg.ClipURL, Publishers: cfg.Publishers, Logger: cfg.Logger,
		CountSnapshots: func(result string, n int) { cfg.Metrics.snapshot(cfg.Camera, result, n) }}
	if cfg.Store != nil {
		w.Snapshots = cfg.Store
	}
	s.w = events.NewWorker(w)
	return s, nil
}

// Track implements Tracker.
func (s *EventStage) Track(o *Output) {
	f := o.Frame
	s.clock[uint64(f.Seq)%uint64(len(s.clock))] = frameTime{f.Seq, f.Captured}
	res := s.tr.Update(f.Seq, f.PTS, o.Result.Detections)
	job := &events.Job{Width: f.Width, Height: f.Height}
	for _, t := range res.New {
		first := s.wall(o, t.FirstSeq, t.FirstSeen)
		s.tracks[t.ID] = &trackState{id: events.EventID(s.cfg.Camera, first, int64(t.ID)), firstWall: first}
		s.follow(o, t, job)
	}
	for _, t := range res.Updated {
		s.follow(o, t, job)
	}
	for _, t := range res.Ended {
		s.end(o, t, job)
	}

	if s.cfg.Keep != nil {
		kept := o.Result.Detections[:0]
		for i := range o.Result.Detections {
			if s.cfg.Keep(&o.Result.Detections[i]) {
				kept = append(kept, o.Result.Detections[i])
			}
		}
		o.Result.Detections = kept
	}
	if len(job.Snapshots) > 0 && s.cfg.Clean {
		job.RGB = slices.Clone(f.RGB) // drawing happens in place
	}
	s.job = job
}

// Drawn implements Tracker: the frame as drawn is the annotated snapshot.
func (s *EventStage) Drawn(o *Output) {
	job := s.job
	s.job = nil
	if job == nil || (len(job.Snapshots) == 0 && len(job.Events) == 0 && len(job.Forget) == 0) {
		return
	}
	if len(job.Snapshots) > 0 && job.RGB == nil {
		job.RGB = o.Frame.RGB // nothing writes the frame after drawing
	}
	s.w.Push(job)
}

// End implements Tracker: every track still alive ends, the worker sends
// what it has and stops.
func (s *EventStage) End() {
	job := &events.Job{}
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
func (s *EventStage) wall(o *Output, seq int64, pts time.Duration) time.Time {
	if ft := s.clock[uint64(seq)%uint64(len(s.clock))]; ft.seq == seq && !ft.at.IsZero() {
		return ft.at
	}
	if o == nil {
		return time.Now()
	}
	return o.Frame.Captured.Add(pts - o.Frame.PTS)
}

// follow updates a confirmed track seen in this frame and decides its
// event.
func (s *EventStage) follow(o *Output, t track.Track, job *events.Job) {
	st := s.tracks[t.ID]
	if st == nil {
		return
	}
	zonesChanged := false
	if len(s.zones) > 0 {
		x := float64(t.Box[0]+t.Box[2]) / 2 / float64(o.Frame.Width)
		y := float64(t.Box[3]) / float64(o.Frame.Height)
		var mask *detection.Mask
		if s.cfg.ZoneOverlap > 0 && t.Det >= 0 && t.Det < len(o.Result.Detections) && o.Result.Detections[t.Det].Mask.W > 0 {
			mask = &o.Result.Detections[t.Det].Mask
		}
		var in []string
		for _, name := range s.zones {
			z := s.cfg.Zones[name]
			if mask != nil && z.maskShare(mask, o.Frame.Width, o.Frame.Height) >= s.cfg.ZoneOverlap ||
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
	if t.Improved && t.Det >= 0 && t.Det < len(o.Result.Detections) {
		d := &o.Result.Detections[t.Det]
		st.mask = d.Mask
		st.stages, st.w, st.h = d.StageScores, o.Frame.Width, o.Frame.Height
		if s.snap && s.wanted(t, st, false) {
			job.Snapshots = append(job.Snapshots, st.id)
		}
	}
	switch {
	case !st.sent:
		if s.wanted(t, st, true) {
			st.sent = true
			s.emit(o, t, st, events.EventNew, job)
			if s.snap && !t.Improved {
				// passed the filter late: its best frame is gone, this one
				// will do until a better one comes
				job.Snapshots = append(job.Snapshots, st.id)
			}
		}
	case zonesChanged,
		t.BestScore > st.sentBest && o.Frame.PTS-st.sentAt >= s.cfg.Rules.UpdateInterval:
		s.emit(o, t, st, events.EventUpdate, job)
	}
}

// wanted says whether a track passes the event filter; with full false
// only the label is checked (zones and duration can still come).
func (s *EventStage) wanted(t track.Track, st *trackState, full bool) bool {
	if s.labels != nil && (t.ClassID < 0 || t.ClassID >= len(s.labels) || !s.labels[t.ClassID]) {
		return false
	}
	if !full {
		return true
	}
	if zs := s.cfg.Rules.Zones; len(zs) > 0 && !slices.ContainsFunc(zs, func(z string) bool { return slices.Contains(st.entered, z) }) {
		return false
	}
	return t.LastSeen-t.FirstSeen >= s.cfg.Rules.MinDuration
}

func (s *EventStage) end(o *Output, t track.Track, job *events.Job) {
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
	s.emit(o, t, st, events.EventEnd, job)
}

// emit adds an event about t to the job.
func (s *EventStage) emit(o *Output, t track.Track, st *trackState, typ events.EventType, job *events.Job) {
	ev := events.Event{
		Type: typ, ID: st.id, Camera: s.cfg.Camera, TrackID: int64(t.ID), Label: t.Label, ClassID: t.ClassID,
		FirstSeen: st.firstWall, LastSeen: s.wall(o, t.LastSeq, t.LastSeen), FirstPTS: t.FirstSeen, LastPTS: t.LastSeen,
		Score: t.Score, Box: t.Box, BestScore: t.BestScore, BestBox: t.BestBox, BestPTS: t.BestPTS,
		StageScores: st.stages, Width: st.w, Height: st.h,
		EnteredZones: slices.Clone(st.entered), Zones: slices.Clone(st.in),
	}
	if o != nil {
		st.sentAt = o.Frame.PTS
	}
	st.sentBest = t.BestScore
	job.Events = append(job.Events, events.Pending{Event: ev, Mask: st.mask})
	s.cfg.Metrics.event(s.cfg.Camera, string(typ))
}
