package pipeline

import (
	"log/slog"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
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

// EventStage is a camera's Tracker: an events.Stage (the tracker, the
// events it makes of the tracks, their snapshots and publishing) on the
// stream's output goroutine, fed from the run's Outputs.
type EventStage struct {
	*events.Stage
	f events.Frame // the frame between Track and Drawn
}

// NewEventStage makes a camera's stage and starts its worker; End stops it.
func NewEventStage(cfg EventStageConfig) (*EventStage, error) {
	if err := checkLabels(cfg.Rules.Labels, cfg.Classes); err != nil {
		return nil, err
	}
	r := cfg.Rules
	sc := events.StageConfig{Camera: cfg.Camera, Classes: cfg.Classes, Tracker: r.Tracker, UpdateInterval: r.UpdateInterval,
		Labels: r.Labels, RequireZones: r.Zones, MinDuration: r.MinDuration, Zones: cfg.Zones, ZoneOverlap: cfg.ZoneOverlap,
		Keep: cfg.Keep, KeepSnapshots: r.KeepSnapshots, Clean: cfg.Clean, SnapshotURL: cfg.SnapshotURL, ClipURL: cfg.ClipURL,
		Publishers: cfg.Publishers, Logger: cfg.Logger,
		CountEvent:     func(typ string) { cfg.Metrics.event(cfg.Camera, typ) },
		CountSnapshots: func(result string, n int) { cfg.Metrics.snapshot(cfg.Camera, result, n) }}
	if cfg.Store != nil { // a nil *SnapshotStore must not become a non-nil interface
		sc.Snapshots = cfg.Store
	}
	st, err := events.NewStage(sc)
	if err != nil {
		return nil, err
	}
	return &EventStage{Stage: st}, nil
}

// Track implements Tracker: the stage sets the detections' track ids and
// drops what the camera does not keep.
func (s *EventStage) Track(o *Output) {
	f := o.Frame
	s.f = events.Frame{Seq: f.Seq, PTS: f.PTS, Captured: f.Captured, Width: f.Width, Height: f.Height, RGB: f.RGB,
		Detections: o.Result.Detections}
	s.Stage.Track(&s.f)
	o.Result.Detections = s.f.Detections
	s.f = events.Frame{}
}

// Drawn implements Tracker: the frame as drawn is the annotated snapshot.
func (s *EventStage) Drawn(o *Output) { s.Stage.Drawn(o.Frame.RGB) }
