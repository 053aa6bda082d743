package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// WriterConfig configures a Writer. Every field but Store has a default.
type WriterConfig struct {
	Store *Store
	// Queue bounds the events waiting; when full the oldest is dropped and
	// counted. Default 1000.
	Queue int
	// RetainDays: events last seen and segments ended longer ago than
	// this are deleted at start and every PruneEvery. 0 keeps everything.
	RetainDays int
	// PruneEvery: default 1 h.
	PruneEvery time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed write (the
	// database away), doubling; default 500 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// FlushTimeout bounds how long Close keeps writing what is queued;
	// default 5 s.
	FlushTimeout time.Duration
	// Now is the clock of retention; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// WriterStats are a Writer's counters, for logs and /metrics.
type WriterStats struct {
	// Written counts events stored; Dropped those pushed out of a full
	// queue or still queued when Close gave up; Errors failed writes (each
	// retried); Pruned rows deleted by retention.
	Written, Dropped, Errors, Pruned uint64
	Queued                           int
	LastError                        string
}

// Writer stores events on a goroutine of its own behind a bounded queue:
// Put never waits for the database. What is queued when the goroutine
// comes round is written in one transaction, so a burst costs one commit;
// a failed write keeps its events and is tried again with backoff.
type Writer struct {
	cfg WriterConfig
	log *slog.Logger

	mu      sync.Mutex
	queue   []Event
	segs    []Segment
	closed  bool
	lastErr string

	wake   chan struct{}
	stop   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	written, dropped, errs, pruned atomic.Uint64
}

// ErrClosed is returned by Put after Close.
var ErrClosed = errors.New("event store writer closed")

// NewWriter starts the writing goroutine.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Store == nil {
		return nil, errors.New("event store writer: no store")
	}
	if cfg.Queue == 0 {
		cfg.Queue = 1000
	}
	if cfg.Queue < 0 || cfg.RetainDays < 0 {
		return nil, fmt.Errorf("%w: queue %d, retain_days %d: want positive numbers", ErrConfig, cfg.Queue, cfg.RetainDays)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PruneEvery, time.Hour)
	def(&cfg.MinBackoff, 500*time.Millisecond)
	def(&cfg.MaxBackoff, 30*time.Second)
	def(&cfg.FlushTimeout, 5*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{cfg: cfg, log: cfg.Logger.With("sink", "store", "driver", cfg.Store.driver),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	go w.run()
	return w, nil
}

// Put queues e and returns at once; a full queue drops its oldest event.
func (w *Writer) Put(e Event) error {
	if err := e.validate(); err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if len(w.queue) >= w.cfg.Queue {
		w.queue = w.queue[1:]
		w.dropped.Add(1)
	}
	w.queue = append(w.queue, e)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// PutSegment queues a recording segment (a recorder's closed or growing
// file) and returns at once, as Put does; segments share the queue's bound.
func (w *Writer) PutSegment(g Segment) error {
	if g.Camera == "" || g.Path == "" {
		return errors.New("event store: a segment needs a camera and a path")
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if len(w.segs) >= w.cfg.Queue {
		w.segs = w.segs[1:]
		w.dropped.Add(1)
	}
	w.segs = append(w.segs, g)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// Stats returns the counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WriterStats{Written: w.written.Load(), Dropped: w.dropped.Load(), Errors: w.errs.Load(), Pruned: w.pruned.Load(),
		Queued: len(w.queue) + len(w.segs), LastError: w.lastErr}
}

// Close stops taking events and keeps writing what is queued for at most
// FlushTimeout; what is left then is counted as dropped. It does not close
// the Store. Close is idempotent.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	t := time.AfterFunc(w.cfg.FlushTimeout, w.cancel)
	<-w.done
	t.Stop()
	w.cancel()
}

func (w *Writer) run() {
	defer close(w.done)
	backoff := time.Duration(0)
	prune := time.NewTimer(0)
	defer prune.Stop()
	for {
		if w.writeSegments() {
			continue
		}
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		if len(batch) > 0 {
			if err := w.cfg.Store.PutEvents(w.ctx, batch...); err != nil {
				w.errs.Add(1)
				w.setErr(err)
				w.requeue(batch)
				if w.ctx.Err() != nil {
					w.dropRest()
					return
				}
				backoff = min(max(2*backoff, w.cfg.MinBackoff), w.cfg.MaxBackoff)
				select {
				case <-time.After(backoff):
				case <-w.ctx.Done():
				}
				continue
			}
			backoff = 0
			w.written.Add(uint64(len(batch)))
			w.setErr(nil)
			continue
		}
		select {
		case <-w.wake:
		case <-prune.C:
			w.prune()
			prune.Reset(w.cfg.PruneEvery)
		case <-w.stop:
			w.mu.Lock()
			empty := len(w.queue) == 0 && len(w.segs) == 0
			w.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

// writeSegments writes the queued segments, oldest first, and says
// whether it did anything (so that the loop comes round again). A failed
// write keeps the rest queued and waits as a failed event batch does.
func (w *Writer) writeSegments() bool {
	w.mu.Lock()
	if len(w.segs) == 0 {
		w.mu.Unlock()
		return false
	}
	g := w.segs[0]
	w.mu.Unlock()
	if err := w.cfg.Store.PutSegment(w.ctx, g); err != nil {
		w.errs.Add(1)
		w.setErr(err)
		if w.ctx.Err() != nil {
			w.dropRest()
			return false
		}
		select {
		case <-time.After(w.cfg.MinBackoff):
		case <-w.ctx.Done():
		}
		return true
	}
	w.mu.Lock()
	if len(w.segs) > 0 && w.segs[0] == g {
		w.segs = w.segs[1:]
	}
	w.mu.Unlock()
	w.setErr(nil)
	return true
}

// requeue puts a failed batch back in front of what came meanwhile, within
// the queue's bound (the oldest go first).
func (w *Writer) requeue(batch []Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := append(batch, w.queue...)
	if over := len(q) - w.cfg.Queue; over > 0 {
		q = q[over:]
		w.dropped.Add(uint64(over))
	}
	w.queue = q
}

func (w *Writer) dropRest() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dropped.Add(uint64(len(w.queue) + len(w.segs)))
	w.queue, w.segs = nil, nil
}

// setErr logs an error once while it repeats, and the recovery.
func (w *Writer) setErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case err == nil && w.lastErr != "":
		w.log.Info("event store writes again")
		w.lastErr = ""
	case err != nil && err.Error() != w.lastErr:
		w.log.Error("event store write failed; retrying", "err", err)
		w.lastErr = err.Error()
	}
}

func (w *Writer) prune() {
	if w.cfg.RetainDays == 0 {
		return
	}
	cutoff := w.cfg.Now().Add(-time.Duration(w.cfg.RetainDays) * 24 * time.Hour)
	ev, seg, err := w.cfg.Store.Prune(w.ctx, cutoff)
	if err != nil {
		w.errs.Add(1)
		w.log.Warn("event store retention failed", "err", err)
		return
	}
	w.pruned.Add(uint64(ev + seg))
	if ev+seg > 0 {
		w.log.Info("event store retention", "events", ev, "segments", seg, "before", cutoff.UTC().Format(time.RFC3339))
	}
}
