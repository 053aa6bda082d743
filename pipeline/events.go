package pipeline

import (
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/track"
)

// EventPublisher takes events without blocking (events.MQTTSink,
// events.WebhookSink: each queues them for its own goroutine).
type EventPublisher interface {
	Publish(ev events.Event) error
}

// EventStageConfig configures one camera's tracker stage.
type EventStageConfig struct {
	Camera  string
	Classes []string
	Rules   EventRules
	// Zones are the camera's zones by name.
	Zones map[string]Zone
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
	// Publishers get every event, in order.
	Publishers []EventPublisher
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
// snapshots, the masks' RLE and the publishing happen on the stage's own
// worker goroutine behind a queue that never blocks the stream.
type EventStage struct {
	cfg    EventStageConfig
	tr     *track.Tracker
	zones  []string // names, sorted
	labels []bool   // by class id; nil: all
	snap   bool

	tracks map[uint64]*trackState
	clock  [256]frameTime // seq -> wall clock of recent frames
	job    *eventJob      // this frame's, between Track and Drawn
	w      *eventWorker
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

// eventJob is one frame's work for the worker: snapshots to save from rgb
// (tracks whose best frame this is), then events to publish.
type eventJob struct {
	snaps  []string // event ids
	rgb    []byte
	w, h   int
	events []jobEvent
	done   chan struct{} // closed once done, when set
}

type jobEvent struct {
	ev   events.Event
	mask detection.Mask
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
	s.w = newEventWorker(cfg)
	return s, nil
}

// Track implements Tracker.
func (s *EventStage) Track(o *Output) {
	f := o.Frame
	s.clock[uint64(f.Seq)%uint64(len(s.clock))] = frameTime{f.Seq, f.Captured}
	res := s.tr.Update(f.Seq, f.PTS, o.Result.Detections)
	job := &eventJob{w: f.Width, h: f.Height}
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
	if len(job.snaps) > 0 && s.cfg.Clean {
		job.rgb = slices.Clone(f.RGB) // drawing happens in place
	}
	s.job = job
}

// Drawn implements Tracker: the frame as drawn is the annotated snapshot.
func (s *EventStage) Drawn(o *Output) {
	job := s.job
	s.job = nil
	if job == nil || (len(job.snaps) == 0 && len(job.events) == 0) {
		return
	}
	if len(job.snaps) > 0 && job.rgb == nil {
		job.rgb = o.Frame.RGB // nothing writes the frame after drawing
	}
	s.w.push(job)
}

// End implements Tracker: every track still alive ends, the worker sends
// what it has and stops.
func (s *EventStage) End() {
	job := &eventJob{}
	if s.job != nil { // a frame tracked but never drawn (hard stop)
		job = s.job
		job.snaps, job.rgb = nil, nil
		s.job = nil
	}
	for _, t := range s.tr.EndAll() {
		s.end(nil, t, job)
	}
	if len(job.events) > 0 {
		s.w.push(job)
	}
	s.w.close()
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
func (s *EventStage) follow(o *Output, t track.Track, job *eventJob) {
	st := s.tracks[t.ID]
	if st == nil {
		return
	}
	zonesChanged := false
	if len(s.zones) > 0 {
		x := float64(t.Box[0]+t.Box[2]) / 2 / float64(o.Frame.Width)
		y := float64(t.Box[3]) / float64(o.Frame.Height)
		var in []string
		for _, name := range s.zones {
			if s.cfg.Zones[name].contains(x, y) {
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
			job.snaps = append(job.snaps, st.id)
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
				job.snaps = append(job.snaps, st.id)
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

func (s *EventStage) end(o *Output, t track.Track, job *eventJob) {
	st := s.tracks[t.ID]
	delete(s.tracks, t.ID)
	if st == nil || !st.sent {
		return
	}
	s.emit(o, t, st, events.EventEnd, job)
}

// emit adds an event about t to the job.
func (s *EventStage) emit(o *Output, t track.Track, st *trackState, typ events.EventType, job *eventJob) {
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
	job.events = append(job.events, jobEvent{ev: ev, mask: st.mask})
	s.cfg.Metrics.event(s.cfg.Camera, string(typ))
}

// maxQueuedImages bounds the frames the worker may hold for snapshots; a
// job beyond it loses its snapshots (counted), never its events.
const maxQueuedImages = 8

// eventWorker saves snapshots and publishes a camera's events in order on
// a goroutine of its own.
type eventWorker struct {
	cfg EventStageConfig

	mu     sync.Mutex
	queue  []*eventJob
	images int
	closed bool
	wake   chan struct{}
	done   chan struct{}

	paths     map[string]string // event id -> snapshot path
	snapFails int               // snapshots failed since the last saved
}

func newEventWorker(cfg EventStageConfig) *eventWorker {
	w := &eventWorker{cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{}), paths: map[string]string{}}
	go w.run()
	return w
}

// push queues a job and returns at once.
func (w *eventWorker) push(j *eventJob) {
	w.mu.Lock()
	if j.rgb != nil {
		if w.images >= maxQueuedImages {
			w.cfg.Metrics.snapshot(w.cfg.Camera, "skipped", len(j.snaps))
			j.snaps, j.rgb = nil, nil
		} else {
			w.images++
		}
	}
	w.queue = append(w.queue, j)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *eventWorker) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// flush waits until the worker has done every job queued before.
func (w *eventWorker) flush() {
	j := &eventJob{done: make(chan struct{})}
	w.push(j)
	<-j.done
}

// close makes the worker finish the queue and waits for it.
func (w *eventWorker) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

func (w *eventWorker) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		if len(w.queue) == 0 {
			closed := w.closed
			w.mu.Unlock()
			if closed {
				return
			}
			<-w.wake
			continue
		}
		j := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		if j.rgb != nil {
			w.images--
		}
		w.mu.Unlock()
		w.do(j)
	}
}

func (w *eventWorker) do(j *eventJob) {
	cam := w.cfg.Camera
	if j.done != nil {
		defer close(j.done)
	}
	if j.rgb != nil && len(j.snaps) > 0 {
		jpg, encErr := w.cfg.Store.Encode(j.w, j.h, j.rgb)
		for _, id := range slices.Compact(j.snaps) {
			p, err := "", encErr
			if err == nil {
				p, err = w.cfg.Store.SaveJPEG(cam, id, jpg)
			}
			if err != nil {
				w.cfg.Metrics.snapshot(cam, "failed", 1)
				// Once per run of failures, as the MQTT sink does: a full
				// disk fails every snapshot, each with its own temporary
				// file's name in the message (285 lines in 40 s).
				if w.snapFails == 0 {
					w.cfg.Logger.Error("snapshot not saved; until one is, further failures are only counted (htcstream_snapshots_total{result=\"failed\"})",
						"camera", cam, "err", err)
				}
				w.snapFails++
				continue
			}
			if w.snapFails > 0 {
				w.cfg.Logger.Info("snapshots saved again", "camera", cam, "failed", w.snapFails)
				w.snapFails = 0
			}
			w.paths[id] = p
			w.cfg.Metrics.snapshot(cam, "saved", 1)
		}
	}
	for _, je := range j.events {
		ev := je.ev
		ev.Snapshot = w.paths[ev.ID]
		if ev.Snapshot != "" && w.cfg.SnapshotURL != "" {
			ev.SnapshotURL = w.cfg.SnapshotURL + "/" + cam + "/" + filepath.Base(ev.Snapshot)
		}
		if err := ev.SetMask(je.mask, ev.Width, ev.Height); err != nil {
			w.cfg.Logger.Warn("event without its mask", "camera", cam, "track", ev.TrackID, "err", err)
			ev.Mask = nil
		}
		for _, p := range w.cfg.Publishers {
			if err := p.Publish(ev); err != nil {
				w.cfg.Logger.Warn("event not published", "camera", cam, "track", ev.TrackID, "type", ev.Type, "err", err)
			}
		}
		if ev.Type == events.EventEnd {
			delete(w.paths, ev.ID)
		}
	}
}
