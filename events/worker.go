package events

import (
	"log/slog"
	"path/filepath"
	"slices"
	"sync"

	"github.com/htcstream/htcstream/detection"
)

// Publisher takes events without blocking (MQTTSink, WebhookSink: each
// queues them for its own goroutine).
type Publisher interface {
	Publish(ev Event) error
}

// SnapshotSaver keeps the JPEG of an event's best frame (the snapshot
// store, stream/record.SnapshotStore).
type SnapshotSaver interface {
	// Encode makes the JPEG of a w x h RGB frame, once for every event
	// whose best frame it is.
	Encode(w, h int, rgb []byte) ([]byte, error)
	// SaveJPEG keeps it as the camera's snapshot of event id and returns
	// its path.
	SaveJPEG(camera, id string, jpg []byte) (string, error)
}

// WorkerConfig configures a camera's Worker.
type WorkerConfig struct {
	Camera string
	// Snapshots keeps the best frames; nil: none.
	Snapshots SnapshotSaver
	// SnapshotURL, when set (the web server serves the snapshots), is the
	// URL path events give their snapshot under: SnapshotURL/camera/file.
	SnapshotURL string
	// ClipURL, when set, is the URL path end events give their clip under:
	// ClipURL/camera/<event id>.mp4.
	ClipURL string
	// Publishers get every event, in order.
	Publishers []Publisher
	// CountSnapshots, when set, counts n snapshots "saved", "failed" or
	// "skipped" (a queue too full of frames).
	CountSnapshots func(result string, n int)
	Logger         *slog.Logger
}

// Pending is an event on its way out with the mask of its best frame,
// which the worker turns into the event's RLE.
type Pending struct {
	Event Event
	Mask  detection.Mask
}

// Job is one frame's work: snapshots of RGB (Width x Height) for the
// events named in Snapshots (tracks whose best frame this is), then
// Events to publish.
type Job struct {
	Snapshots []string
	// Forget names tracks that ended without an event: their pending
	// snapshot goes, never having been a file.
	Forget        []string
	RGB           []byte
	Width, Height int
	Events        []Pending
	done          chan struct{} // closed once done, when set
}

// maxQueuedImages bounds the frames the worker may hold for snapshots; a
// job beyond it loses its snapshots (counted), never its events.
const maxQueuedImages = 8

// Worker saves snapshots and publishes a camera's events in order on a
// goroutine of its own, so that neither a slow disk nor JPEG encoding nor
// RLE holds up the stream that makes the events.
type Worker struct {
	cfg WorkerConfig

	mu     sync.Mutex
	queue  []*Job
	images int
	closed bool
	wake   chan struct{}
	done   chan struct{}

	paths     map[string]string // event id -> snapshot path
	snapFails int               // snapshots failed since the last saved
	// A track's best frame is kept as JPEG bytes until the track makes
	// its first event (pending), and only then written: a track that dies
	// before passing the event filter (labels, zones, min_duration)
	// leaves no file behind. evented holds the ids with an event so far.
	pending map[string][]byte
	evented map[string]bool
}

// maxPendingSnapshots bounds the snapshots held for tracks without an
// event yet (a few hundred KB each at 1080p); beyond it the oldest
// pending one is dropped, counted as skipped.
const maxPendingSnapshots = 64

// NewWorker starts a camera's worker; Close stops it.
func NewWorker(cfg WorkerConfig) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CountSnapshots == nil {
		cfg.CountSnapshots = func(string, int) {}
	}
	w := &Worker{cfg: cfg, wake: make(chan struct{}, 1), done: make(chan struct{}), paths: map[string]string{},
		pending: map[string][]byte{}, evented: map[string]bool{}}
	go w.run()
	return w
}

// Push queues a job and returns at once.
func (w *Worker) Push(j *Job) {
	w.mu.Lock()
	if j.RGB != nil {
		if w.images >= maxQueuedImages {
			w.cfg.CountSnapshots("skipped", len(j.Snapshots))
			j.Snapshots, j.RGB = nil, nil
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

// Closed reports whether Close was called.
func (w *Worker) Closed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Flush waits until the worker has done every job queued before.
func (w *Worker) Flush() {
	j := &Job{done: make(chan struct{})}
	w.Push(j)
	<-j.done
}

// Close makes the worker finish the queue and waits for it.
func (w *Worker) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

func (w *Worker) run() {
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
		if j.RGB != nil {
			w.images--
		}
		w.mu.Unlock()
		w.do(j)
	}
}

// save writes an evented track's snapshot.
func (w *Worker) save(id string, jpg []byte) {
	p, err := w.cfg.Snapshots.SaveJPEG(w.cfg.Camera, id, jpg)
	if err != nil {
		w.failed(err)
		return
	}
	if w.snapFails > 0 {
		w.cfg.Logger.Info("snapshots saved again", "camera", w.cfg.Camera, "failed", w.snapFails)
		w.snapFails = 0
	}
	w.paths[id] = p
	w.cfg.CountSnapshots("saved", 1)
}

// failed counts a snapshot not saved. Once per run of failures, as the MQTT
// sink does: a full disk fails every snapshot, each with its own temporary
// file's name in the message (285 lines in 40 s).
func (w *Worker) failed(err error) {
	w.cfg.CountSnapshots("failed", 1)
	if w.snapFails == 0 {
		w.cfg.Logger.Error("snapshot not saved; until one is, further failures are only counted (htcstream_snapshots_total{result=\"failed\"})",
			"camera", w.cfg.Camera, "err", err)
	}
	w.snapFails++
}

// hold keeps the best frame of a track that has no event yet.
func (w *Worker) hold(id string, jpg []byte) {
	if _, ok := w.pending[id]; !ok && len(w.pending) >= maxPendingSnapshots {
		for k := range w.pending { // any one: these are tracks that wait long
			delete(w.pending, k)
			w.cfg.CountSnapshots("skipped", 1)
			break
		}
	}
	w.pending[id] = jpg
}

func (w *Worker) do(j *Job) {
	cam := w.cfg.Camera
	if j.done != nil {
		defer close(j.done)
	}
	if j.RGB != nil && len(j.Snapshots) > 0 && w.cfg.Snapshots != nil {
		jpg, err := w.cfg.Snapshots.Encode(j.Width, j.Height, j.RGB)
		for _, id := range slices.Compact(j.Snapshots) {
			switch {
			case err != nil:
				w.failed(err)
			case w.evented[id]:
				w.save(id, jpg)
			default:
				w.hold(id, jpg)
			}
		}
	}
	for _, id := range j.Forget {
		delete(w.pending, id)
	}
	for _, pe := range j.Events {
		ev := pe.Event
		if !w.evented[ev.ID] {
			w.evented[ev.ID] = true
			if jpg, ok := w.pending[ev.ID]; ok {
				delete(w.pending, ev.ID)
				w.save(ev.ID, jpg)
			}
		}
		ev.Snapshot = w.paths[ev.ID]
		if ev.Type == EventEnd && w.cfg.ClipURL != "" {
			id := ev.ID
			if id == "" {
				id = EventID(ev.Camera, ev.FirstSeen, ev.TrackID)
			}
			ev.ClipURL = w.cfg.ClipURL + "/" + cam + "/" + id + ".mp4"
		}
		if ev.Snapshot != "" && w.cfg.SnapshotURL != "" {
			ev.SnapshotURL = w.cfg.SnapshotURL + "/" + cam + "/" + filepath.Base(ev.Snapshot)
		}
		if err := ev.SetMask(pe.Mask, ev.Width, ev.Height); err != nil {
			w.cfg.Logger.Warn("event without its mask", "camera", cam, "track", ev.TrackID, "err", err)
			ev.Mask = nil
		}
		for _, p := range w.cfg.Publishers {
			if err := p.Publish(ev); err != nil {
				w.cfg.Logger.Warn("event not published", "camera", cam, "track", ev.TrackID, "type", ev.Type, "err", err)
			}
		}
		if ev.Type == EventEnd {
			delete(w.paths, ev.ID)
			delete(w.evented, ev.ID)
		}
	}
}
