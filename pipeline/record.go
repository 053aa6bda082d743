package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/store"
	"github.com/htcstream/htcstream/stream/record"
)

// RecordConfig is a camera's continuous recording (README, "Recordings and
// review"; docs/recordings.md).
type RecordConfig struct {
	Enabled bool `yaml:"enabled"`
	// Dir holds a folder per camera: its segments, and its event clips
	// under clips/.
	Dir string `yaml:"dir"`
	// Segment is a segment's length; a new one starts at the first
	// keyframe after it.
	Segment time.Duration `yaml:"segment"`
	Retain  struct {
		// Days: segments older than this go (0: kept).
		Days float64 `yaml:"days"`
		// MaxBytes: the camera's segments stay within this (0: no limit).
		MaxBytes int64 `yaml:"max_bytes"`
	} `yaml:"retain"`
	// Mode: source (the camera's own packets, copied, never re-encoded) or
	// annotated (the frames as drawn, H.264-encoded: costs an encoder).
	Mode string `yaml:"mode"`
	// Clip is the footage an event's clip takes before its first frame
	// and after its last.
	Clip struct {
		Pre  time.Duration `yaml:"pre"`
		Post time.Duration `yaml:"post"`
		// Ring: a camera that makes events but is not recorded keeps this
		// much of its last video in memory, for its events' clips (0:
		// none; their clips then need recording).
		Ring time.Duration `yaml:"ring"`
	} `yaml:"clip"`
}

func defaultRecord() RecordConfig {
	var r RecordConfig
	r.Dir = "recordings"
	r.Segment = 10 * time.Minute
	r.Mode = "source"
	r.Clip.Pre, r.Clip.Post, r.Clip.Ring = 5*time.Second, 5*time.Second, 60*time.Second
	return r
}

func (r RecordConfig) check(bad func(string, ...any), p string) {
	switch r.Mode {
	case "source", "annotated":
	default:
		bad("%smode %q: want source or annotated", p, r.Mode)
	}
	if r.Segment < time.Second {
		bad("%ssegment %v: want at least 1s", p, r.Segment)
	}
	if !(r.Retain.Days >= 0) {
		bad("%sretain.days %v: want 0 (keep) or more", p, r.Retain.Days)
	}
	if r.Retain.MaxBytes < 0 {
		bad("%sretain.max_bytes %d is negative", p, r.Retain.MaxBytes)
	}
	if r.Clip.Pre < 0 || r.Clip.Post < 0 || r.Clip.Ring < 0 {
		bad("%sclip pre/post/ring %v/%v/%v: want 0 or more", p, r.Clip.Pre, r.Clip.Post, r.Clip.Ring)
	}
	if r.Enabled && r.Dir == "" {
		bad("%sdir is empty", p)
	}
}

// recordings are the run's recorders, one per recording camera, and the
// windows of the events whose clips they can cut.
type recordings struct {
	byCamera map[string]*record.Recorder
	// rings keep the last minute of the cameras that make events but are
	// not recorded, for their clips
	rings map[string]*record.Ring
	clip  map[string]RecordConfig // camera -> its settings

	mu      sync.Mutex
	windows map[string]clipWindow // event id -> window
	order   []string

	// store, once the event store is open, lists the segments
	store atomic.Pointer[eventStore]
}

type clipWindow struct {
	camera      string
	first, last time.Time
}

// maxClipWindows bounds the events remembered for clips: the clips of
// older ones are cut when asked only if already cut.
const maxClipWindows = 10000

func newRecordings(cams []Camera, m *Metrics, log *slog.Logger) (*recordings, error) {
	rs := &recordings{byCamera: map[string]*record.Recorder{}, rings: map[string]*record.Ring{}, clip: map[string]RecordConfig{},
		windows: map[string]clipWindow{}}
	for _, c := range cams {
		rc := c.Record
		if !rc.Enabled {
			if c.Events.Enabled && rc.Clip.Ring > 0 {
				rs.rings[c.Name] = record.NewRing(rc.Clip.Ring+rc.Clip.Pre, 0)
				rs.clip[c.Name] = rc
			}
			continue
		}
		rec, err := record.NewRecorder(record.SegmentConfig{Dir: rc.Dir, Camera: c.Name, Segment: rc.Segment,
			RetainAge: time.Duration(rc.Retain.Days * 24 * float64(time.Hour)), RetainBytes: rc.Retain.MaxBytes, Logger: log,
			OnSegment: rs.segmentToStore, OnDelete: rs.forgetSegment})
		if err != nil {
			rs.Close()
			return nil, fmt.Errorf("%w: camera %s: record: %v", ErrConfig, c.Name, err)
		}
		rs.byCamera[c.Name] = rec
		rs.clip[c.Name] = rc
		m.watchRecorder(c.Name, rec)
		log.Info("recording", "camera", c.Name, "dir", rec.Dir(), "segment", rc.Segment)
	}
	return rs, nil
}

// toStore lists every segment in the event store from now on: as it
// starts, as it grows and when it is done; retention's deletions leave it.
func (rs *recordings) toStore(es *eventStore) { rs.store.Store(es) }

func (rs *recordings) segmentToStore(s record.Segment) {
	es := rs.store.Load()
	if es == nil {
		return
	}
	// the writer queues it; a full queue drops the oldest, counted
	es.w.PutSegment(store.Segment{Camera: s.Camera, Path: s.Path, Start: s.Start, End: s.Start.Add(s.Duration),
		Bytes: s.Bytes, Worker: es.worker})
}

func (rs *recordings) forgetSegment(path string) {
	es := rs.store.Load()
	if es == nil {
		return
	}
	// off the recorder's goroutine: a slow database never holds up the
	// recording
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := es.db.DeleteSegment(ctx, es.worker, path); err != nil {
			slog.Warn("record: the store keeps a deleted segment", "file", path, "err", err)
		}
	}()
}

// Close ends every recording, closing the segments in progress.
func (rs *recordings) Close() {
	if rs == nil {
		return
	}
	for _, r := range rs.byCamera {
		r.Close()
	}
	for _, r := range rs.rings {
		r.Close()
	}
}

// Publish implements EventPublisher: it remembers the window of every event
// of a recording camera, for its clip.
func (rs *recordings) Publish(ev events.Event) error {
	if _, ok := rs.clip[ev.Camera]; !ok {
		return nil
	}
	id := ev.ID
	if id == "" {
		id = events.EventID(ev.Camera, ev.FirstSeen, ev.TrackID)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if _, ok := rs.windows[id]; !ok {
		rs.order = append(rs.order, id)
		if len(rs.order) > maxClipWindows {
			delete(rs.windows, rs.order[0])
			rs.order = rs.order[1:]
		}
	}
	rs.windows[id] = clipWindow{camera: ev.Camera, first: ev.FirstSeen, last: ev.LastSeen}
	return nil
}

// SegmentDir is the folder of a camera's segments; ok is false when the
// camera does not record.
func (rs *recordings) SegmentDir(camera string) (string, bool) {
	r, ok := rs.byCamera[camera]
	if !ok {
		return "", false
	}
	return r.Dir(), true
}

var clipFile = regexp.MustCompile(`^([A-Za-z0-9_-]+-\d+-\d+)\.mp4$`)

// ErrNoClip: no clip can be had for that event (unknown, or not recorded).
var ErrNoClip = errors.New("no clip")

// Clip returns the file of an event's clip, cutting it from the recordings
// the first time it is asked for once its post-roll is recorded. Before
// then it cuts what is there without keeping it.
func (rs *recordings) Clip(camera, file string) (string, error) {
	rc, ok := rs.clip[camera]
	m := clipFile.FindStringSubmatch(file)
	if !ok || m == nil {
		return "", ErrNoClip
	}
	dir := filepath.Join(rc.Dir, camera, "clips")
	path := filepath.Join(dir, file)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	rs.mu.Lock()
	w, ok := rs.windows[m[1]]
	rs.mu.Unlock()
	if !ok {
		// an event of an earlier run (or one forgotten since): the store
		// remembers its window
		w, ok = rs.storedWindow(m[1])
	}
	if !ok || w.camera != camera {
		return "", ErrNoClip
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	end := w.last.Add(rc.Clip.Post)
	final := time.Now().After(end.Add(2 * time.Second)) // the fragment after end is on disk
	out := path
	if !final {
		out = filepath.Join(dir, ".preview-"+file)
	}
	from := w.first.Add(-rc.Clip.Pre)
	var err error
	if ring, ok := rs.rings[camera]; ok {
		_, err = ring.Clip(from, end, out)
	} else {
		_, err = record.CutClip(rc.Dir, camera, from, end, out)
	}
	if err != nil {
		return "", err
	}
	return out, nil
}

// Tap is what sees a camera's packets: its recorder (mode source) or its
// ring; nil when it has neither.
func (rs *recordings) Tap(camera string) decode.PacketTap {
	if r, ok := rs.byCamera[camera]; ok {
		if rs.clip[camera].Mode == "annotated" {
			return nil
		}
		return r
	}
	if r, ok := rs.rings[camera]; ok {
		return r
	}
	return nil
}

// Annotated is the recorder of a camera recorded in mode annotated (its
// sink feeds it the drawn frames); nil otherwise.
func (rs *recordings) Annotated(camera string) *record.Recorder {
	if rs == nil || rs.clip[camera].Mode != "annotated" {
		return nil
	}
	return rs.byCamera[camera]
}

// Clips says whether the camera's events get clips.
func (rs *recordings) Clips(camera string) bool {
	_, ok := rs.clip[camera]
	return ok
}

// storedWindow looks an event's window up in the event store, when there
// is one.
func (rs *recordings) storedWindow(id string) (clipWindow, bool) {
	es := rs.store.Load()
	if es == nil {
		return clipWindow{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := es.db.Events(ctx, store.Query{ID: id, Limit: 1})
	if err != nil || len(evs) == 0 {
		return clipWindow{}, false
	}
	return clipWindow{camera: evs[0].Camera, first: evs[0].FirstSeen, last: evs[0].LastSeen}, true
}

// watchRecorder exports a recorder's counters in /metrics.
func (m *Metrics) watchRecorder(camera string, r *record.Recorder) {
	if m == nil {
		return
	}
	lbl := prometheus.Labels{"camera": camera}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "htcstream_recording_bytes", Help: "Bytes of the camera's recording segments on disk.", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().DiskBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "htcstream_recording_files", Help: "The camera's recording segments on disk.", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().Files) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "htcstream_recording_segments_total", Help: "Recording segments completed.", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().Segments) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "htcstream_recording_packets_total", Help: "Video packets written to recordings.", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().Packets) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "htcstream_recording_packets_dropped_total", Help: "Video packets not recorded (queue full, waiting for a keyframe).", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "htcstream_recording_segments_deleted_total", Help: "Recording segments removed by retention.", ConstLabels: lbl},
			func() float64 { return float64(r.Stats().Deleted) }),
	)
}
