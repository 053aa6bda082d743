package pipeline

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
)

// eventOutputs are a run's trackers and event sinks: one EventStage per
// tracked camera, one MQTT sink, the webhooks and the snapshot store.
type eventOutputs struct {
	trackers []Tracker // by camera index; nil: untracked
	mqtt     *events.MQTTSink
	hooks    []*events.WebhookSink
	store    *record.SnapshotStore
	db       *eventStore
}

// newEventOutputs starts the event sinks and makes the cameras' stages.
// Close them with close, after the run (the stages end with their
// streams).
func newEventOutputs(cfg RunConfig, cams []Camera, classes []string, m *Metrics, log *slog.Logger, recs *recordings) (*eventOutputs, error) {
	e := &eventOutputs{trackers: make([]Tracker, len(cams))}
	tracked := false
	for _, c := range cams {
		tracked = tracked || c.Events.Enabled
	}
	if !tracked {
		if cfg.MQTT.Broker != "" || len(cfg.Webhooks) > 0 || cfg.Events.Store.enabled() {
			return nil, fmt.Errorf("%w: mqtt, webhooks or events.store are set but no camera makes events: set events.enabled: true", ErrConfig)
		}
		return e, nil
	}
	ok := false
	defer func() {
		if !ok {
			e.close()
			e.closeStore()
		}
	}()
	var pubs []events.Publisher
	if cfg.MQTT.Broker != "" {
		mc := cfg.streamMQTT()
		mc.Logger = log
		mq, err := events.NewMQTTSink(mc)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		e.mqtt = mq
		pubs = append(pubs, mq)
	}
	var names []string
	for i, w := range cfg.Webhooks {
		h, err := events.NewWebhookSink(events.WebhookConfig{URL: w.URL, Headers: w.Headers, Timeout: w.Timeout,
			MaxAttempts: w.MaxAttempts, Queue: w.Queue, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("%w: webhooks[%d]: %w", ErrConfig, i, err)
		}
		e.hooks = append(e.hooks, h)
		names = append(names, hookName(w.URL))
		pubs = append(pubs, h)
	}
	db, err := openEventStore(cfg, m, log)
	if err != nil {
		return nil, err
	}
	if db != nil {
		e.db = db
		pubs = append(pubs, db)
	}
	if s := cfg.Events.Snapshots; s.Dir != "" {
		st, err := record.NewSnapshotStore(record.SnapshotStoreConfig{Dir: s.Dir, MaxCount: s.MaxCount, MaxAge: s.MaxAge,
			MaxBytes: s.MaxBytes, Quality: s.Quality})
		if err != nil {
			return nil, err
		}
		e.store = st
	}
	if len(recs.clip) > 0 {
		pubs = append(pubs, recs) // it remembers each event's window for its clip
	}
	m.WatchEventSinks(e.mqtt, e.hooks, names, e.store)
	snapshotURL := ""
	if e.store != nil && cfg.Outputs.Serve != "" {
		snapshotURL = "/snapshots" // the server serves the store's folder (assembly.go)
	}
	for i, c := range cams {
		if !c.Events.Enabled {
			continue
		}
		keep, err := newKeeper(c.CameraConfig, classes)
		if err != nil {
			return nil, fmt.Errorf("camera %s: %w", c.Name, err)
		}
		clipURL := ""
		if recs.Clips(c.Name) && cfg.Outputs.Serve != "" {
			clipURL = "/clips" // the server cuts and serves them (recordings.Clip)
		}
		stage, err := NewEventStage(EventStageConfig{Camera: c.Name, Classes: classes, Rules: c.Events, Zones: c.Zones, ZoneOverlap: c.ZoneOverlap,
			Keep: keep, Store: e.store, Clean: cfg.Events.Snapshots.Frame == "clean", Publishers: pubs, Metrics: m, Logger: log,
			SnapshotURL: snapshotURL, ClipURL: clipURL})
		if err != nil {
			return nil, fmt.Errorf("camera %s: events: %w", c.Name, err)
		}
		e.trackers[i] = stage
		if e.mqtt != nil {
			e.mqtt.Announce(c.Name, announced(c, classes)...)
		}
	}
	ok = true
	return e, nil
}

// announced are the labels whose count topics (and Home Assistant
// sensors) a camera has from the start: its events.labels, else its
// classes, else every class of the model.
func announced(c Camera, classes []string) []string {
	switch {
	case len(c.Events.Labels) > 0:
		return c.Events.Labels
	case len(c.Classes) > 0:
		return c.Classes
	}
	return classes
}

// hookName is a webhook's URL without credentials, query or fragment.
func hookName(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "webhook"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// close stops the stages that never ran, then flushes and closes the
// sinks (MQTT publishes offline). Call it after the run.
func (e *eventOutputs) close() {
	if e == nil {
		return
	}
	for i, t := range e.trackers {
		if s, ok := t.(*EventStage); ok {
			s.Stop()
		}
		e.trackers[i] = nil
	}
	for _, h := range e.hooks {
		h.Close()
	}
	if e.mqtt != nil {
		e.mqtt.Close()
	}
	if e.db != nil {
		e.db.w.Close()
	}
}

// closeStore closes the event store's database; after close, and after
// the web server that reads it has stopped.
func (e *eventOutputs) closeStore() {
	if e != nil && e.db != nil {
		e.db.db.Close()
	}
}

// report prints the event sinks' counts.
func (e *eventOutputs) report(w io.Writer) {
	if e.mqtt != nil {
		st := e.mqtt.Stats()
		fmt.Fprintf(w, "mqtt: %d events published, %d dropped, %d errors\n", st.Published, st.Dropped, st.Errors)
	}
	for i, h := range e.hooks {
		st := h.Stats()
		fmt.Fprintf(w, "webhook %d: %d events delivered, %d failed, %d dropped\n", i, st.Published, st.Failed, st.Dropped)
	}
	if e.db != nil {
		st := e.db.w.Stats()
		fmt.Fprintf(w, "event store (%s): %d events written, %d dropped, %d errors\n", e.db.db.Driver(), st.Written, st.Dropped, st.Errors)
	}
	if e.store != nil {
		n, b := e.store.Stats()
		fmt.Fprintf(w, "snapshots: %d files, %.1f MB in %s\n", n, float64(b)/1e6, e.store.Dir())
	}
}
