package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/store"
)

// eventStore is the run's event store and the output that feeds it.
type eventStore struct {
	db     *store.Store
	w      *store.Writer
	worker string
}

// openEventStore opens events.store (migrating it) and starts its writer;
// nil when the run keeps no store.
func openEventStore(cfg RunConfig, m *Metrics, log *slog.Logger) (*eventStore, error) {
	sc := cfg.Events.Store
	if !sc.enabled() {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.Open(ctx, store.Config{Driver: sc.Driver, Path: sc.Path, DSN: sc.DSN})
	if err != nil {
		return nil, fmt.Errorf("events.store: %w", err)
	}
	w, err := store.NewWriter(store.WriterConfig{Store: db, Queue: sc.Queue, RetainDays: sc.RetainDays, Logger: log})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("events.store: %w", err)
	}
	worker := sc.Worker
	if worker == "" {
		worker = cfg.MQTT.ClientID
	}
	if worker == "" {
		h, _ := os.Hostname()
		worker = "htcstream-" + h
	}
	if m != nil {
		m.reg.MustRegister(storeCollector{w})
	}
	return &eventStore{db: db, w: w, worker: worker}, nil
}

// Publish implements EventPublisher: the event's track row is upserted by
// the writer's goroutine, never on the caller's.
func (e *eventStore) Publish(ev events.Event) error {
	id := ev.ID
	if id == "" {
		id = events.EventID(ev.Camera, ev.FirstSeen, ev.TrackID)
	}
	return e.w.Put(store.Event{ID: id, Camera: ev.Camera, TrackID: ev.TrackID, Label: ev.Label, ClassID: ev.ClassID,
		Zones: ev.EnteredZones, FirstSeen: ev.FirstSeen, LastSeen: ev.LastSeen, Ended: ev.Type == events.EventEnd,
		BestScore: ev.BestScore, Box: ev.BestBox, Width: ev.Width, Height: ev.Height, StageScores: ev.StageScores,
		Snapshot: ev.Snapshot, SnapshotURL: ev.SnapshotURL, ClipURL: ev.ClipURL, Worker: e.worker})
}

type storeCollector struct{ w *store.Writer }

var (
	descStoreWritten = prometheus.NewDesc("htcstream_store_written_total", "Events written to the event store.", nil, nil)
	descStoreDropped = prometheus.NewDesc("htcstream_store_dropped_total", "Events dropped from the event store's full queue or left at shutdown.", nil, nil)
	descStoreErrors  = prometheus.NewDesc("htcstream_store_errors_total", "Failed event store writes (retried) and retention runs.", nil, nil)
	descStorePruned  = prometheus.NewDesc("htcstream_store_pruned_total", "Rows deleted by the event store's retention.", nil, nil)
	descStoreQueued  = prometheus.NewDesc("htcstream_store_queued", "Events waiting for the event store.", nil, nil)
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Stats()
	ch <- prometheus.MustNewConstMetric(descStoreWritten, prometheus.CounterValue, float64(st.Written))
	ch <- prometheus.MustNewConstMetric(descStoreDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(descStoreErrors, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(descStorePruned, prometheus.CounterValue, float64(st.Pruned))
	ch <- prometheus.MustNewConstMetric(descStoreQueued, prometheus.GaugeValue, float64(st.Queued))
}
