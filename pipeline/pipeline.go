package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
)

// Source produces the decoded frames of one stream.
type Source interface {
	// Name identifies the stream in results, logs and metrics.
	Name() string
	// Live sources deliver in real time and must never be blocked.
	Live() bool
	// Run delivers frames through emit until the source ends (nil), fails
	// for good (its error) or ctx is done. emit blocks only for non-live
	// sources; it returns false when the pipeline no longer wants frames.
	Run(ctx context.Context, emit func(*decode.Frame) bool) error
}

// Output is one processed frame, handed to every sink of its stream in
// turn. Frame holds the annotated picture after drawing.
type Output struct {
	Stream string
	Frame  *decode.Frame
	Result cascade.Result
	// Latency is capture-to-drawn time.
	Latency time.Duration
}

// Sink consumes the outputs of one or several streams. Write is called from
// one goroutine per stream; a sink shared by streams must serialise itself.
// Close is called once, after the last Write, on every path including
// errors and interrupts.
type Sink interface {
	Write(o *Output) error
	Close() error
}

// Detector runs the model on a batch of same-sized frames.
type Detector interface {
	Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error)
}

// Drawer annotates a frame in place with its result.
type Drawer interface {
	Draw(o *Output) error
}

// Config wires a pipeline. Fields without a default must be set.
type Config struct {
	Sources  []Source
	Detector Detector
	// Detectors, when set, gives source i its own detector (Detectors[i];
	// a nil entry uses Detector): cameras with their own test-time views.
	// Frames of different detectors never share a batch.
	Detectors []Detector
	// Filters, when set, edits source i's results (Filters[i]; nil keeps
	// them) before drawing and before any sink sees them: per-camera class
	// lists, thresholds and minimum areas.
	Filters []ResultFilter
	// Trackers, when set, follow source i's instances (Trackers[i]; nil:
	// untracked) on the stream's output goroutine, never on inference's.
	Trackers []Tracker
	// Drawer annotates frames before the sinks see them; nil leaves frames
	// as decoded.
	Drawer Drawer
	// Sinks returns the sinks of a stream (called once per stream at start).
	// Each sink gets a queue of its own (SinkQueue frames): a slow sink
	// holds up only itself. When a live stream's sink is behind, its oldest
	// queued frame is dropped (OnSinkDrop); a file stream's sink instead
	// holds up that stream's source, so nothing of a file is skipped.
	Sinks func(stream string) ([]Sink, error)
	// SinkQueue is each sink's queue length in frames (default 8).
	SinkQueue int
	// OnSinkDrop, when set, hears of every frame a live stream's sink
	// dropped; the sink is named by its SinkName method, else "sink<k>".
	OnSinkDrop func(stream, sink string)
	// Batch configures the shared batcher (default: batches of 1, no wait).
	Batch infer.BatcherConfig
	// Metrics receives counts and timings; nil keeps none.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// ResultFilter edits a frame's result in place before it is drawn.
type ResultFilter func(r *cascade.Result)

// Tracker follows one stream's instances across its frames. Its methods
// are called from the stream's output goroutine only, in frame order.
type Tracker interface {
	// Track is called for every frame after the stream's filter and
	// before drawing. It sets each detection's TrackID and may drop
	// detections.
	Track(o *Output)
	// Drawn is called after drawing, before the sinks get o; it must not
	// modify o.
	Drawn(o *Output)
	// End is called once after the stream's last frame, on every path
	// (end of source, error, interrupt).
	End()
}

// inFlight is how many frames of one stream may be between its source and
// its sink queues: a stream whose outputs are slow to leave stops taking
// frames from its source instead of stalling inference for the others.
const inFlight = 4

type item struct {
	stream int
	frame  *decode.Frame
}

// StreamError reports that one stream failed; the others went on.
type StreamError struct {
	Stream string
	Err    error
}

func (e *StreamError) Error() string { return fmt.Sprintf("stream %s: %v", e.Stream, e.Err) }
func (e *StreamError) Unwrap() error { return e.Err }

// Run processes every source until all have ended, or until drain is done
// (then sources stop, and frames in flight still reach the sinks), or until
// hard is done (then in-flight frames are abandoned). Sinks are closed on
// every path. The result joins the failures of single streams
// (*StreamError, the others went on) and of the pipeline itself.
func Run(drain, hard context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Sources) == 0 {
		return errors.New("pipeline: no sources")
	}
	names := make([]string, len(cfg.Sources))
	sinks := make([][]Sink, len(cfg.Sources))
	closeSinks := func() error {
		var errs []error
		for i, ss := range sinks {
			for _, s := range ss {
				if err := s.Close(); err != nil {
					errs = append(errs, fmt.Errorf("stream %s: close sink: %w", names[i], err))
				}
			}
		}
		return errors.Join(errs...)
	}
	for i, src := range cfg.Sources {
		names[i] = src.Name()
		ss, err := cfg.Sinks(names[i])
		if err != nil {
			return errors.Join(fmt.Errorf("stream %s: %w", names[i], err), closeSinks())
		}
		sinks[i] = ss
		cfg.Metrics.stream(names[i])
	}

	// hard also ends the drain phase: a hard stop is a drain that does
	// not wait.
	drain, stopDrain := context.WithCancel(drain)
	defer stopDrain()
	go func() {
		select {
		case <-hard.Done():
			stopDrain()
		case <-drain.Done():
		}
	}()

	var (
		errMu sync.Mutex
		errs  []error
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}

	// Every stream holds inFlight credits: a frame takes one on its way in
	// and gives it back once it has left for the sink queues.
	credits := make([]chan struct{}, len(cfg.Sources))
	for i := range credits {
		credits[i] = make(chan struct{}, inFlight)
	}
	detectorOf := func(i int) Detector {
		if i < len(cfg.Detectors) && cfg.Detectors[i] != nil {
			return cfg.Detectors[i]
		}
		return cfg.Detector
	}
	// Frames of different detectors go to different batches: the batch key
	// carries the detector's index among the distinct ones.
	detGroup := make([]int, len(cfg.Sources))
	var dets []Detector
	for i := range cfg.Sources {
		d := detectorOf(i)
		g := slices.IndexFunc(dets, func(x Detector) bool { return x == d })
		if g < 0 {
			g = len(dets)
			dets = append(dets, d)
		}
		detGroup[i] = g
	}

	// Sources -> one shared channel, through a per-source mailbox for live
	// sources (newest frame wins) or a blocking hand-over for files.
	in := make(chan item)
	var srcWG sync.WaitGroup
	for i, src := range cfg.Sources {
		srcWG.Add(1)
		go func(i int, src Source) {
			defer srcWG.Done()
			if err := runSource(drain, hard, i, src, in, credits[i], cfg.Metrics); err != nil && !errors.Is(err, context.Canceled) {
				cfg.Logger.Error("stream failed", "stream", names[i], "err", err)
				fail(&StreamError{Stream: names[i], Err: err})
			}
		}(i, src)
	}
	go func() {
		srcWG.Wait()
		close(in)
	}()

	// The shared batcher groups same-sized frames of all streams.
	batches := make(chan []item)
	b := infer.NewBatcher(cfg.Batch, func(it item) string {
		return fmt.Sprintf("%d/%dx%d", detGroup[it.stream], it.frame.Width, it.frame.Height)
	})
	go func() {
		if err := b.Run(hard, in, batches); err != nil && !errors.Is(err, context.Canceled) {
			fail(err)
		}
	}()

	// Per-stream output queues keep each stream's order; as a stream never
	// has more than inFlight frames out, inference never waits on them.
	outs := make([]chan *Output, len(cfg.Sources))
	var sinkWG sync.WaitGroup
	for i := range outs {
		outs[i] = make(chan *Output, inFlight)
		var filter ResultFilter
		if i < len(cfg.Filters) {
			filter = cfg.Filters[i]
		}
		var tracker Tracker
		if i < len(cfg.Trackers) {
			tracker = cfg.Trackers[i]
		}
		st := streamOut{name: names[i], live: cfg.Sources[i].Live(), credits: credits[i], filter: filter, tracker: tracker,
			drawer: cfg.Drawer, metrics: cfg.Metrics, queue: cfg.SinkQueue, onDrop: cfg.OnSinkDrop}
		sinkWG.Add(1)
		go func(i int) {
			defer sinkWG.Done()
			if err := st.run(hard, outs[i], sinks[i]); err != nil {
				cfg.Logger.Error("stream output failed", "stream", names[i], "err", err)
				fail(&StreamError{Stream: names[i], Err: err})
			}
		}(i)
	}

	inferErr := runInference(hard, batches, func(i int) Detector { return dets[detGroup[i]] }, outs, cfg.Metrics)
	for _, o := range outs {
		close(o)
	}
	sinkWG.Wait()
	if inferErr != nil && !errors.Is(inferErr, context.Canceled) {
		fail(inferErr)
		// Unblock the sources so their goroutines end.
		stopDrain()
	}
	// Sources may still be blocked handing over a frame after a model
	// failure: drain and discard until they have all ended.
	for range in {
	}
	srcWG.Wait()
	if err := closeSinks(); err != nil {
		fail(err)
	}
	errMu.Lock()
	defer errMu.Unlock()
	return errors.Join(errs...)
}

// runSource runs one source, handing its frames to in; each frame first
// takes one of the stream's credits (given back when it reaches the sinks).
func runSource(drain, hard context.Context, i int, src Source, in chan<- item, credits chan struct{}, m *Metrics) error {
	name := src.Name()
	if !src.Live() {
		return src.Run(drain, func(f *decode.Frame) bool {
			m.frameIn(name)
			select {
			case credits <- struct{}{}:
			case <-hard.Done():
				return false
			}
			select {
			case in <- item{i, f}:
				return true
			case <-hard.Done():
				<-credits
				return false
			}
		})
	}
	// A live source writes into a one-frame mailbox, replacing a frame
	// that still waits there (counted as dropped); a forwarder takes a
	// credit, then the newest frame, and hands it on. emit never blocks:
	// it is the mailbox's only sender.
	mailbox := make(chan *decode.Frame, 1)
	fwdDone := make(chan struct{})
	go func() {
		defer close(fwdDone)
		for {
			select {
			case credits <- struct{}{}:
			case <-hard.Done():
				return
			}
			f, ok := <-mailbox
			if !ok {
				<-credits
				return
			}
			select {
			case in <- item{i, f}:
			case <-hard.Done():
				<-credits
				return
			}
		}
	}()
	err := src.Run(drain, func(f *decode.Frame) bool {
		m.frameIn(name)
		select {
		case mailbox <- f:
			return true
		default:
		}
		select {
		case <-mailbox:
			m.frameDropped(name)
		default:
		}
		mailbox <- f
		return true
	})
	close(mailbox)
	<-fwdDone
	return err
}

// runInference runs the detector on every batch and routes each frame's
// result to its stream's queue.
func runInference(ctx context.Context, batches <-chan []item, detectorOf func(stream int) Detector, outs []chan *Output, m *Metrics) error {
	// On an early return keep reading, so the batcher is never stuck on a
	// send; after the loop the channel is closed and this ends at once.
	defer func() {
		go func() {
			for range batches {
			}
		}()
	}()
	for batch := range batches {
		imgs := make([]cascade.Image, len(batch))
		for k, it := range batch {
			imgs[k] = cascade.Image{Width: it.frame.Width, Height: it.frame.Height, Pix: it.frame.RGB, Order: infer.RGB}
		}
		t0 := time.Now()
		// a batch holds frames of one detector only (the batch key says so)
		res, tm, err := detectorOf(batch[0].stream).Detect(imgs)
		if err != nil {
			return fmt.Errorf("inference: %w", err)
		}
		m.batch(len(batch), time.Since(t0), tm)
		for k, it := range batch {
			select {
			// the stream's output goroutine names the output (streamOut.run)
			case outs[it.stream] <- &Output{Frame: it.frame, Result: res[k]}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// streamOut is the output side of one stream: filter, draw, then hand each
// frame to every sink's queue.
type streamOut struct {
	name    string
	live    bool
	credits chan struct{}
	filter  ResultFilter
	tracker Tracker
	drawer  Drawer
	metrics *Metrics
	queue   int
	onDrop  func(stream, sink string)
}

// run consumes the stream's outputs until outs is closed, then waits for
// every sink queue to empty (or, on a hard stop, to be abandoned). A failing
// sink is reported once and dropped; the others go on.
func (st streamOut) run(ctx context.Context, outs <-chan *Output, sinks []Sink) error {
	qs := make([]*sinkQueue, len(sinks))
	for k, s := range sinks {
		qs[k] = newSinkQueue(s, k, st.queue)
		go qs[k].run(ctx)
	}
	if st.tracker != nil {
		defer st.tracker.End()
	}
	var errs []error
	for o := range outs {
		if ctx.Err() != nil {
			<-st.credits
			continue // hard stop: drop what is left, keep draining
		}
		o.Stream = st.name
		if st.filter != nil {
			st.filter(&o.Result)
		}
		if st.tracker != nil {
			t0 := time.Now()
			st.tracker.Track(o)
			st.metrics.stage("track", time.Since(t0))
		}
		st.metrics.detected(st.name, o.Result.Detections)
		if st.drawer != nil {
			t0 := time.Now()
			if err := st.drawer.Draw(o); err != nil {
				errs = append(errs, fmt.Errorf("draw frame %d: %w", o.Frame.Seq, err))
			}
			st.metrics.draw(time.Since(t0))
		}
		if st.tracker != nil {
			st.tracker.Drawn(o)
		}
		o.Latency = time.Since(o.Frame.Captured)
		for _, q := range qs {
			if st.live {
				if q.offer(o) && st.onDrop != nil {
					st.onDrop(st.name, q.name)
				}
			} else {
				q.put(ctx, o)
			}
		}
		<-st.credits
		st.metrics.frameOut(st.name, o.Latency)
	}
	for _, q := range qs {
		close(q.ch)
	}
	for _, q := range qs {
		<-q.done
		if q.err != nil {
			errs = append(errs, q.err)
		}
	}
	return errors.Join(errs...)
}
