package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/flow"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/track"
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
	// Keyframe says the model ran on this frame. Propagated says its
	// detections are tracks carried to it (Predictor), not the model's
	// own; in live timing a keyframe's frame leaves before its result and
	// is both.
	Keyframe, Propagated bool
	// Still says the model skipped this frame because nothing moved
	// (motion gating).
	Still bool
	// Why the model ran on a keyframe (empty on the other frames).
	Why KeyReason
	// ModelRun numbers the model run that saw a keyframe, from 1 in this
	// process (cameras batched together share it); Waited is how many
	// runs went to other cameras while it was first in its camera's line.
	// Both are 0 while its result is not in: a live keyframe goes out
	// before it.
	ModelRun uint64
	Waited   int
}

// Kind is what the schedule made of the frame, as
// htcstream_schedule_frames_total counts it: "keyframe" (the model ran on
// it), "still" (the model skipped it: nothing moved) or "propagated".
func (o *Output) Kind() string {
	switch {
	case o.Keyframe:
		return "keyframe"
	case o.Still:
		return "still"
	}
	return "propagated"
}

// HandoffFunc hears that a frame captured at captured, of kind
// Output.Kind, left an EncodingSink encoded.
type HandoffFunc func(captured time.Time, kind string)

// EncodingSink is a sink that encodes its frames and hands the encoded
// pictures on (into a file, to WebRTC viewers). The pipeline calls Handoff
// once, before the first Write; the sink then calls f for each frame when
// its encoded picture leaves, from Write only: that is the end of
// htcstream_frame_latency_seconds. A frame the sink never encodes (a
// preview nobody watches) is not reported, nor are those an encoder
// flushes when the run ends (their wait is the run's end, not the
// stream's pace).
type EncodingSink interface {
	Sink
	Handoff(f HandoffFunc)
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
	// Schedules, when set, gives source i its keyframe policy
	// (Schedules[i]; the zero Schedule: the model on every frame). A
	// stream whose model skips frames needs its tracker to be a Predictor
	// (a plain track.Tracker is made when Trackers[i] is nil): it carries
	// the tracks to the frames the model did not see.
	Schedules []Schedule
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
	// Batch sizes the model's runs: the keyframes of several streams in one
	// (default: batches of 1, no wait).
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
	// Track is called for every keyframe (every frame the model saw)
	// after the stream's filter and before drawing. It sets each
	// detection's TrackID and may drop detections. In live timing a
	// keyframe's result comes after its frame left: o.Frame is then the
	// model's copy of it, drawn for Drawn but sent to no sink.
	Track(o *Output)
	// Drawn is called after drawing, before the sinks get o; it must not
	// modify o.
	Drawn(o *Output)
	// End is called once after the stream's last frame, on every path
	// (end of source, error, interrupt).
	End()
}

// Predictor is a Tracker that carries its tracks to the frames the model
// did not see: the tracks matched at the last Track call, each with the
// box its motion model gives for the frame at pts (track.Tracker.Predict).
// It must not change the tracker.
type Predictor interface {
	Predict(pts time.Duration) []track.Predicted
}

// inFlight is how many frames of one stream may be between its source and
// its sink queues: a stream whose outputs are slow to leave stops taking
// frames from its source instead of stalling inference for the others.
const inFlight = 4

// liveSlack is the frames a scheduled live stream may have in flight
// beyond inFlight.
const liveSlack = 12

type item struct {
	stream int
	s      *slot
}

// slot is one frame on its way from its source to its sinks, in the
// stream's order queue. A keyframe's result is set by inference, which
// then closes done.
type slot struct {
	frame *decode.Frame
	// model is what the model reads: frame itself, or a copy when frame
	// may be drawn on before the model is done (live timing).
	model *decode.Frame
	key   bool
	still bool // not a keyframe because nothing moved
	sc    *scheduler
	// reason: why a keyframe is one; run and waited are set when the
	// model takes it (modelQueue.commit), read after done is closed.
	reason KeyReason
	run    uint64
	waited int
	res    cascade.Result
	done   chan struct{}
}

func (s *slot) ready() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// newSlot decides whether f is a keyframe (sc nil: always) and, when the
// frame will be drawn before the model is done, gives the model a copy.
func newSlot(f *decode.Frame, sc *scheduler, copyForModel bool) *slot {
	s := &slot{frame: f, model: f, sc: sc, key: true, reason: KeyInterval}
	if sc != nil {
		s.key, s.still, s.reason = sc.decide(f)
	}
	if s.key {
		s.done = make(chan struct{})
		if copyForModel {
			c := *f
			c.RGB = slices.Clone(f.RGB)
			s.model = &c
		}
	}
	return s
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

	// Each stream's keyframe policy, and the tracker that fills the frames
	// the model skips.
	scheds := make([]*scheduler, len(cfg.Sources))
	preds := make([]Predictor, len(cfg.Sources))
	trackers := make([]Tracker, len(cfg.Sources))
	copy(trackers, cfg.Trackers)
	for i, src := range cfg.Sources {
		var sch Schedule
		if i < len(cfg.Schedules) {
			sch = cfg.Schedules[i]
		}
		if err := sch.validate(); err != nil {
			return errors.Join(fmt.Errorf("stream %s: %w", names[i], err), closeSinks())
		}
		if sch.everyFrame() {
			continue
		}
		sc, err := newScheduler(names[i], sch, src.Live(), cfg.Metrics)
		if err != nil {
			return errors.Join(err, closeSinks())
		}
		scheds[i] = sc
		if trackers[i] == nil {
			pt, err := newPlainTracker()
			if err != nil {
				return errors.Join(err, closeSinks())
			}
			trackers[i] = pt
		}
		p, ok := trackers[i].(Predictor)
		if !ok {
			return errors.Join(fmt.Errorf("stream %s: its tracker cannot carry tracks to the frames the model skips (no Predict)", names[i]), closeSinks())
		}
		preds[i] = p
	}

	// Every stream holds credits (inFlight, and as many as smooth timing
	// holds back): a frame takes one on its way in and gives it back once
	// it has left for the sink queues.
	credits := make([]chan struct{}, len(cfg.Sources))
	orders := make([]chan *slot, len(cfg.Sources))
	for i := range credits {
		n := inFlight
		if scheds[i] != nil {
			n += scheds[i].sch.hold()
			if cfg.Sources[i].Live() {
				// every frame of a camera goes out, not only the model's:
				// room for a burst from the network or a slow encode
				n += liveSlack
			}
		}
		credits[i] = make(chan struct{}, n)
		// never full: a frame is in it only while it holds a credit
		orders[i] = make(chan *slot, n)
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

	// Sources -> each stream's order queue (every frame, in capture order)
	// and, for keyframes, the model's one queue, which batches frames of
	// the same detector and size.
	q := newModelQueue(names, cfg.Batch, func(it item) string {
		return fmt.Sprintf("%d/%dx%d", detGroup[it.stream], it.s.model.Width, it.s.model.Height)
	}, cfg.Metrics)
	var srcWG sync.WaitGroup
	for i, src := range cfg.Sources {
		srcWG.Add(1)
		go func(i int, src Source) {
			defer srcWG.Done()
			defer close(orders[i])
			f := feed{i: i, q: q, order: orders[i], credits: credits[i], m: cfg.Metrics, sc: scheds[i]}
			if err := f.run(drain, hard, src); err != nil && !errors.Is(err, context.Canceled) {
				cfg.Logger.Error("stream failed", "stream", names[i], "err", err)
				fail(&StreamError{Stream: names[i], Err: err})
			}
		}(i, src)
	}
	go func() {
		srcWG.Wait()
		q.close()
	}()

	// Per-stream output goroutines keep each stream's order; as a stream
	// never has more frames out than its credits, inference never waits
	// on them.
	modelDone := make(chan struct{})
	var sinkWG sync.WaitGroup
	for i := range cfg.Sources {
		var filter ResultFilter
		if i < len(cfg.Filters) {
			filter = cfg.Filters[i]
		}
		var sch Schedule
		if scheds[i] != nil {
			sch = scheds[i].sch
		}
		st := &streamOut{name: names[i], live: cfg.Sources[i].Live(), credits: credits[i], filter: filter, tracker: trackers[i],
			drawer: cfg.Drawer, metrics: cfg.Metrics, queue: cfg.SinkQueue, onDrop: cfg.OnSinkDrop,
			sch: sch, sc: scheds[i], pred: preds[i], modelDone: modelDone}
		if preds[i] != nil && sch.Propagation != PropagateBox {
			st.mover = flow.NewMover()
		}
		sinkWG.Add(1)
		go func(i int) {
			defer sinkWG.Done()
			if err := st.run(hard, orders[i], sinks[i]); err != nil {
				cfg.Logger.Error("stream output failed", "stream", names[i], "err", err)
				fail(&StreamError{Stream: names[i], Err: err})
			}
		}(i)
	}

	inferErr := runInference(hard, q, func(i int) Detector { return dets[detGroup[i]] }, cfg.Metrics)
	close(modelDone)
	if inferErr != nil && !errors.Is(inferErr, context.Canceled) {
		fail(inferErr)
		// Stop the sources: without a model their keyframes never come.
		stopDrain()
	}
	sinkWG.Wait()
	srcWG.Wait()
	if err := closeSinks(); err != nil {
		fail(err)
	}
	errMu.Lock()
	defer errMu.Unlock()
	return errors.Join(errs...)
}

// feed runs one source, handing every frame to the stream's order queue
// and its keyframes to the model's queue; each frame first takes one of the
// stream's credits (given back when it reaches the sinks).
type feed struct {
	i       int
	q       *modelQueue
	order   chan<- *slot
	credits chan struct{}
	m       *Metrics
	sc      *scheduler // nil: every frame is a keyframe
}

func (fd feed) run(drain, hard context.Context, src Source) error {
	name := src.Name()
	if !src.Live() {
		return src.Run(drain, func(f *decode.Frame) bool {
			fd.m.frameIn(name)
			select {
			case fd.credits <- struct{}{}:
			case <-hard.Done():
				return false
			}
			s := newSlot(f, fd.sc, false)
			fd.order <- s
			if s.key {
				fd.q.push(item{fd.i, s})
			}
			return true
		})
	}
	if fd.sc == nil {
		return fd.mailbox(drain, hard, src)
	}
	// A live source with a schedule: every frame goes out at once, as long
	// as the stream's outputs keep up (else it is dropped, counted); the
	// keyframes join the model's queue, which never blocks.
	smooth := fd.sc.sch.smooth()
	err := src.Run(drain, func(f *decode.Frame) bool {
		fd.m.frameIn(name)
		select {
		case fd.credits <- struct{}{}:
		default:
			fd.m.frameDropped(name)
			return true
		}
		s := newSlot(f, fd.sc, !smooth)
		fd.order <- s
		if s.key {
			fd.q.push(item{fd.i, s})
		}
		return true
	})
	return err
}

// mailbox runs a live source whose model sees every frame it outputs: the
// source writes into a one-frame mailbox, replacing a frame that still
// waits there (counted as dropped); a forwarder takes a credit, waits
// until the model has taken the stream's last frame, then takes the newest
// frame and hands it on. emit never blocks: it is the mailbox's only
// sender.
func (fd feed) mailbox(drain, hard context.Context, src Source) error {
	name := src.Name()
	mailbox := make(chan *decode.Frame, 1)
	fwdDone := make(chan struct{})
	go func() {
		defer close(fwdDone)
		for {
			select {
			case fd.credits <- struct{}{}:
			case <-hard.Done():
				return
			}
			if !fd.q.idle(hard, fd.i) {
				return
			}
			f, ok := <-mailbox
			if !ok {
				<-fd.credits
				return
			}
			s := newSlot(f, nil, false)
			fd.order <- s
			fd.q.push(item{fd.i, s})
		}
	}()
	err := src.Run(drain, func(f *decode.Frame) bool {
		fd.m.frameIn(name)
		select {
		case mailbox <- f:
			return true
		default:
		}
		select {
		case <-mailbox:
			fd.m.frameDropped(name)
		default:
		}
		mailbox <- f
		return true
	})
	close(mailbox)
	<-fwdDone
	return err
}

// runInference runs the detector on every batch the queue gives and hands
// each keyframe its result.
func runInference(ctx context.Context, q *modelQueue, detectorOf func(stream int) Detector, m *Metrics) error {
	for {
		batch, ok := q.take(ctx)
		if !ok {
			return nil
		}
		imgs := make([]cascade.Image, len(batch))
		for k, it := range batch {
			f := it.s.model
			imgs[k] = cascade.Image{Width: f.Width, Height: f.Height, Pix: f.RGB, Order: infer.RGB}
		}
		t0 := time.Now()
		// a batch holds frames of one detector only (the batch key says so)
		res, tm, err := detectorOf(batch[0].stream).Detect(imgs)
		if err != nil {
			q.abandon()
			return fmt.Errorf("inference: %w", err)
		}
		m.batch(len(batch), time.Since(t0), tm)
		for k, it := range batch {
			it.s.res = res[k]
			close(it.s.done)
			if it.s.sc != nil {
				it.s.sc.modelDone()
			}
		}
	}
}

// streamOut is the output side of one stream: filter and track the
// keyframes, carry the tracks to the other frames, draw, then hand each
// frame to every sink's queue, in capture order.
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

	sch       Schedule
	sc        *scheduler // nil: every frame is a keyframe
	pred      Predictor  // nil: every frame is a keyframe
	modelDone <-chan struct{}

	qs   []*sinkQueue
	errs []error
	// prev: the tracks as seen on the last keyframe applied, at prevPTS
	prev     []track.Predicted
	prevPTS  time.Duration
	havePrev bool
	// mover follows the tracks by optical flow (propagation: flow), nil
	// where boxes move as the tracker predicts
	mover *flow.Mover
}

// run consumes the stream's order queue until it is closed and every
// keyframe's result is in (or the model is gone), then waits for every
// sink queue to empty (or, on a hard stop, to be abandoned). A failing
// sink is reported once and dropped; the others go on.
//
// Smooth timing (and every stream whose model sees every frame, and files
// in live timing, with a hold of 0) keeps the
// frames not yet out in held: a keyframe leaves once its result is in,
// the frames before it are interpolated between the keyframes on both
// sides, and a frame waits for the next keyframe at most the schedule's
// hold, after which the tracks are carried to it as in live timing. Live
// timing sends every frame at once and applies each keyframe's result
// when it arrives (late: in order, as inference keeps it).
func (st *streamOut) run(ctx context.Context, order <-chan *slot, sinks []Sink) error {
	st.qs = make([]*sinkQueue, len(sinks))
	for k, s := range sinks {
		q := newSinkQueue(s, k, st.queue)
		if es, ok := s.(EncodingSink); ok && st.metrics != nil {
			es.Handoff(func(captured time.Time, kind string) {
				st.metrics.handedOff(st.name, q.name, kind, time.Since(captured))
			})
		}
		st.qs[k] = q
		go q.run(ctx)
	}
	if st.tracker != nil {
		defer st.tracker.End()
	}
	// A file in live timing still waits for each keyframe's result (it
	// loses nothing by waiting) but never looks ahead: its frames carry
	// the tracks forward from the last keyframe, as a camera's would.
	smooth := st.pred == nil || st.sch.smooth() || !st.live
	var held, late []*slot
	open, dead := true, false
	modelDone, stop := st.modelDone, ctx.Done()
	for {
		if smooth {
			held = st.flush(ctx, held, !open, dead)
		}
		var wait <-chan struct{}
		if smooth {
			for _, h := range held {
				if h.key {
					wait = h.done
					break
				}
			}
		} else if len(late) > 0 {
			wait = late[0].done
		}
		if !open && (wait == nil || dead) && (!smooth || len(held) == 0) {
			break
		}
		var in <-chan *slot
		if open {
			in = order
		}
		select {
		case s, ok := <-in:
			switch {
			case !ok:
				open = false
			case ctx.Err() != nil:
				<-st.credits // hard stop: drop what is left, keep draining
			case smooth:
				held = append(held, s)
			default:
				for len(late) > 0 && late[0].ready() {
					st.lateResult(late[0])
					late = late[1:]
				}
				if s.key && s.ready() {
					st.keyframe(ctx, s)
					continue
				}
				if s.key {
					late = append(late, s)
				}
				st.propagate(ctx, s)
			}
		case <-wait:
			if !smooth {
				st.lateResult(late[0])
				late = late[1:]
			}
		case <-modelDone:
			// inference has ended: a keyframe without its result now
			// never gets one
			dead, modelDone = true, nil
			if !smooth {
				for len(late) > 0 && late[0].ready() {
					st.lateResult(late[0])
					late = late[1:]
				}
				late = nil
			}
		case <-stop:
			stop = nil
			for range held {
				<-st.credits
			}
			held, late = nil, nil
		}
	}
	for _, q := range st.qs {
		close(q.ch)
	}
	for _, q := range st.qs {
		<-q.done
		if q.err != nil {
			st.errs = append(st.errs, q.err)
		}
	}
	return errors.Join(st.errs...)
}

// flush sends what can leave from the front of held and returns the rest:
// final says no more frames come, dead that no more results come.
func (st *streamOut) flush(ctx context.Context, held []*slot, final, dead bool) []*slot {
	for len(held) > 0 {
		h := held[0]
		if h.key {
			if !h.ready() {
				if !dead {
					return held
				}
				<-st.credits // the model failed: this frame has no result
				held = held[1:]
				continue
			}
			st.keyframe(ctx, h)
			held = held[1:]
			continue
		}
		j := -1
		if st.sch.smooth() {
			// A file in live timing never looks ahead, also where a
			// late keyframe left later ones ready in held: its figures
			// must be a camera's.
			j = slices.IndexFunc(held, func(s *slot) bool { return s.key })
		}
		if j > 0 && held[j].ready() {
			// Apply the next keyframe first, so that the frames before it
			// are drawn between the tracks on both sides.
			k := held[j]
			ko := st.apply(k.frame, k.res)
			next := st.snapshot(k.frame.PTS)
			pair := pairTracks(st.prev, next)
			flows := st.flowBetween(held[:j], k.frame, next, pair)
			st.anchor(k.frame, next)
			for i, h := range held[:j] {
				var fl map[uint64][4]float32
				if flows != nil {
					fl = flows[i]
				}
				st.interpolate(ctx, h, next, pair, k.frame.PTS, fl)
			}
			st.send(ctx, ko, k)
			st.prev, st.prevPTS, st.havePrev = next, k.frame.PTS, true
			held = held[j+1:]
			continue
		}
		if j > 0 && !dead {
			return held // its keyframe is coming
		}
		if len(held) <= st.sch.hold() && !final && !dead {
			return held // the next keyframe may still come
		}
		st.propagate(ctx, h)
		held = held[1:]
	}
	return held
}

// apply filters and tracks a keyframe's result.
func (st *streamOut) apply(f *decode.Frame, res cascade.Result) *Output {
	o := &Output{Stream: st.name, Frame: f, Result: res, Keyframe: true}
	if st.filter != nil {
		st.filter(&o.Result)
	}
	if st.tracker != nil {
		t0 := time.Now()
		st.tracker.Track(o)
		st.metrics.stage("track", time.Since(t0))
	}
	st.metrics.detected(st.name, o.Result.Detections)
	return o
}

// snapshot is the tracks as the last keyframe saw them, and tells the
// scheduler whether one of them moves.
func (st *streamOut) snapshot(pts time.Duration) []track.Predicted {
	if st.pred == nil {
		return nil
	}
	ps := st.pred.Predict(pts)
	if st.sc != nil {
		moving := false
		for _, p := range ps {
			if p.Speed > movingSpeed {
				moving = true
				break
			}
		}
		st.sc.moving.Store(moving)
	}
	return ps
}

// keyframe sends a keyframe with the model's result.
func (st *streamOut) keyframe(ctx context.Context, s *slot) {
	o := st.apply(s.frame, s.res)
	if st.pred != nil {
		st.prev, st.prevPTS, st.havePrev = st.snapshot(s.frame.PTS), s.frame.PTS, true
		st.anchor(s.frame, st.prev)
	}
	st.send(ctx, o, s)
}

// lateResult applies a keyframe's result that came after its frame left
// (live timing): the tracks move; the model's copy of the frame is drawn
// for the tracker's snapshots and goes to no sink.
func (st *streamOut) lateResult(s *slot) {
	o := st.apply(s.model, s.res)
	st.prev, st.prevPTS, st.havePrev = st.snapshot(s.model.PTS), s.model.PTS, true
	st.anchor(s.model, st.prev)
	if st.drawer != nil {
		if err := st.drawer.Draw(o); err != nil {
			st.errs = append(st.errs, fmt.Errorf("draw frame %d: %w", o.Frame.Seq, err))
		}
	}
	if st.tracker != nil {
		st.tracker.Drawn(o)
	}
}

// propagate sends a frame with the tracks of the last keyframe, each
// where its motion model puts it on this frame.
func (st *streamOut) propagate(ctx context.Context, s *slot) {
	f := s.frame
	o := &Output{Stream: st.name, Frame: f, Keyframe: s.key, Propagated: true, Still: s.still,
		Result: cascade.Result{Width: f.Width, Height: f.Height}}
	if st.pred != nil && st.havePrev {
		ps := st.pred.Predict(f.PTS)
		boxes := make([][4]float32, len(ps))
		for i, p := range ps {
			boxes[i] = p.Box
		}
		if st.mover != nil {
			// the flow moves the box as seen, not the Kalman filter's
			// size: on the sample, live timing at interval 3, mask AP
			// 0.451 with the filter's size, 0.471 with the seen one
			want := make([]flow.Want, len(ps))
			for i, p := range ps {
				want[i] = flow.Want{Key: p.Key, Size: p.Seen, Fallback: p.Box}
			}
			st.mover.Step(flowFrame(f), want, boxes)
		}
		for i, p := range ps {
			st.addTrack(o, p, boxes[i], warped(p, boxes[i], f))
		}
	}
	st.send(ctx, o, s)
}

// interpolate sends a frame between the last keyframe (st.prev) and the
// next one (next, at pts1; pair[i] is the index in st.prev of next[i]'s
// object, -1 when none): each object seen on both moves in a straight line
// between where they saw it; one seen on one side only stays where that
// side saw it for the half of the gap nearer to it (when it came or went
// in between is not known; the model saw it there).
//
// With flow (fl: where the flow put each earlier keyframe's object on
// this frame, by its track key), an object seen on both sides follows
// the flow, its drift from the later keyframe taken out in proportion to
// the time gone; one seen on the earlier side only follows the flow.
func (st *streamOut) interpolate(ctx context.Context, s *slot, next []track.Predicted, pair []int, pts1 time.Duration, fl map[uint64][4]float32) {
	f := s.frame
	if !st.havePrev || pts1 <= st.prevPTS || f.PTS < st.prevPTS || f.PTS > pts1 {
		st.propagate(ctx, s) // a looping file's jump back: no straight line
		return
	}
	a := float32(f.PTS-st.prevPTS) / float32(pts1-st.prevPTS)
	o := &Output{Stream: st.name, Frame: f, Keyframe: s.key, Propagated: true,
		Result: cascade.Result{Width: f.Width, Height: f.Height}}
	paired := make([]bool, len(st.prev))
	for i, p1 := range next {
		k := pair[i]
		if k < 0 {
			if a >= 0.5 {
				st.addTrack(o, p1, p1.Seen, warped(p1, p1.Seen, f))
			}
			continue
		}
		paired[k] = true
		p0 := st.prev[k]
		box := track.LerpBox(p0.Seen, p1.Seen, a)
		if b, ok := fl[p0.Key]; ok {
			box = b
		}
		// the nearer keyframe's detection; the score between the two as
		// the box is (AP ranks by score: a detection halfway to a
		// doubtful one is less sure than the seen one), the shape too:
		// both masks moved to the box and blended (on the sample at
		// interval 3, 0.512 mask AP against 0.507 with the nearer
		// keyframe's mask alone; at interval 10, 0.397 against 0.385)
		src := p0
		if a >= 0.5 {
			src = p1
		}
		src.ID = p1.ID // a track confirmed on the later keyframe keeps its id
		src.Score = p0.Score + (p1.Score-p0.Score)*a
		st.addTrack(o, src, box, track.BlendMasks(warped(p0, box, f), warped(p1, box, f), a))
	}
	if a < 0.5 {
		for k, p0 := range st.prev {
			if !paired[k] {
				box := p0.Seen
				if b, ok := fl[p0.Key]; ok {
					box = b
				}
				st.addTrack(o, p0, box, warped(p0, box, f))
			}
		}
	}
	st.send(ctx, o, s)
}

// anchor places the tracks of a keyframe for the flow to follow, before
// the frame is drawn on.
func (st *streamOut) anchor(f *decode.Frame, ps []track.Predicted) {
	if st.mover == nil {
		return
	}
	keys := make([]uint64, len(ps))
	for i, p := range ps {
		st.mover.Start(p.Key, flowFrame(f), p.Seen, p.Mask)
		keys[i] = p.Key
	}
	st.mover.Keep(keys)
}

// flowBetween follows the last keyframe's objects (st.prev, anchored on
// its frame) by flow through the held frames and on to the next keyframe
// k, and returns for each held frame where each object is, by track key:
// the flow's box less the share a of its drift from where k saw the
// object (a straight line between the keyframes corrects nothing when the
// flow lands on k's box; only the flow's error is spread). Nil without
// flow.
func (st *streamOut) flowBetween(held []*slot, k *decode.Frame, next []track.Predicted, pair []int) []map[uint64][4]float32 {
	if st.mover == nil || !st.havePrev || k.PTS <= st.prevPTS {
		return nil
	}
	to := make(map[uint64][4]float32, len(next)) // earlier key -> box on k
	for i, p1 := range next {
		if pair[i] >= 0 {
			to[st.prev[pair[i]].Key] = p1.Seen
		}
	}
	out := make([]map[uint64][4]float32, len(held))
	share := make([]float32, len(held)) // of the way from the last keyframe to k
	want := make([]flow.Want, len(st.prev))
	boxes := make([][4]float32, len(st.prev))
	for i, h := range held {
		share[i] = float32(h.frame.PTS-st.prevPTS) / float32(k.PTS-st.prevPTS)
		for j, p0 := range st.prev {
			lerp := p0.Seen
			if b, ok := to[p0.Key]; ok {
				lerp = track.LerpBox(p0.Seen, b, share[i])
			}
			want[j] = flow.Want{Key: p0.Key, Size: lerp, Fallback: lerp}
		}
		st.mover.Step(flowFrame(h.frame), want, boxes)
		out[i] = make(map[uint64][4]float32, len(st.prev))
		for j, p0 := range st.prev {
			out[i][p0.Key] = boxes[j]
		}
	}
	// on to k, for the objects k saw: how far off the flow lands
	want = want[:0]
	for _, p0 := range st.prev {
		if b1, ok := to[p0.Key]; ok {
			want = append(want, flow.Want{Key: p0.Key, Size: b1, Fallback: b1})
		}
	}
	st.mover.Step(flowFrame(k), want, boxes)
	for j, w := range want {
		b1, end := w.Fallback, boxes[j]
		for i := range held {
			b := out[i][w.Key]
			for c := range b {
				b[c] += (b1[c] - end[c]) * share[i]
			}
			out[i][w.Key] = b
		}
	}
	return out
}

func flowFrame(f *decode.Frame) flow.Frame { return flow.Frame{RGB: f.RGB, W: f.Width, H: f.Height} }

// pairTracks pairs the objects of two keyframes, cheapest first, among
// the objects of one class whose centres are less than pairGate object
// sizes apart (the size being the geometric mean of the two boxes' square
// roots of area). The cost adds the distance in sizes, how much the area
// changed (|ln| of the ratio) and how much the score changed, less
// pairSameTrack when the tracker kept them one track. The tracker's word
// alone is not enough: with every detection a track (propagation keeps
// the low-score ones too), a confident object's track goes on with the
// background box that overlaps it best, while the object itself, a little
// further on, starts a new track. And a small object that moves more than
// its own size between keyframes far apart loses its track (its boxes no
// longer overlap), yet is plainly the same object. On the sample at
// interval 3 this pairing took mask AP from 0.488 to 0.503, at interval 10
// from 0.308 to 0.366 (docs/benchmarks.md).
func pairTracks(prev, next []track.Predicted) []int {
	type cand struct {
		i, k int
		c    float64
	}
	var cs []cand
	for i, p1 := range next {
		for k, p0 := range prev {
			if p0.ClassID != p1.ClassID {
				continue
			}
			a0, a1 := max(boxArea(p0.Seen), 1), max(boxArea(p1.Seen), 1)
			dx := float64(p0.Seen[0]+p0.Seen[2]-p1.Seen[0]-p1.Seen[2]) / 2
			dy := float64(p0.Seen[1]+p0.Seen[3]-p1.Seen[1]-p1.Seen[3]) / 2
			d := math.Hypot(dx, dy) / math.Sqrt(math.Sqrt(a0*a1))
			same := p0.Key == p1.Key
			if d >= pairGate && !same {
				continue
			}
			c := d + math.Abs(math.Log(a0/a1)) + math.Abs(float64(p0.Score-p1.Score))
			if same {
				c -= pairSameTrack
			}
			cs = append(cs, cand{i, k, c})
		}
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return cmp.Compare(a.c, b.c) })
	pair := make([]int, len(next))
	for i := range pair {
		pair[i] = -1
	}
	used := make([]bool, len(prev))
	for _, c := range cs {
		if pair[c.i] < 0 && !used[c.k] {
			pair[c.i], used[c.k] = c.k, true
		}
	}
	return pair
}

// pairGate and pairSameTrack weigh pairTracks' choice; measured on the
// sample (2 and 6 sizes, or a bonus of 0 and 1, moved mask AP at interval
// 3 by less than 0.005; a gate of 1 lost 0.015).
const (
	pairGate      = 4
	pairSameTrack = 0.5
)

func boxArea(b [4]float32) float64 {
	return max(0, float64(b[2]-b[0])) * max(0, float64(b[3]-b[1]))
}

// addTrack adds a track's detection at box with mask.
func (st *streamOut) addTrack(o *Output, p track.Predicted, box [4]float32, mask detection.Mask) {
	o.Result.Detections = append(o.Result.Detections, detection.Detection{
		Box: detection.Box{X1: box[0], Y1: box[1], X2: box[2], Y2: box[3]}, Score: p.Score, Label: p.ClassID,
		Class: p.Label, StageScores: p.StageScores, Mask: mask, TrackID: p.ID, Propagated: true,
	})
}

// warped is p's mask moved from where it was seen to box on f.
func warped(p track.Predicted, box [4]float32, f *decode.Frame) detection.Mask {
	return track.WarpMask(p.Mask, p.Seen, box, f.Width, f.Height)
}

// send draws a frame and hands it to every sink's queue, then gives back
// its credit.
func (st *streamOut) send(ctx context.Context, o *Output, s *slot) {
	if st.drawer != nil {
		t0 := time.Now()
		if err := st.drawer.Draw(o); err != nil {
			st.errs = append(st.errs, fmt.Errorf("draw frame %d: %w", o.Frame.Seq, err))
		}
		st.metrics.draw(time.Since(t0))
	}
	if st.tracker != nil && !o.Propagated {
		st.tracker.Drawn(o)
	}
	// an interpolated frame the model skipped for stillness is still one
	o.Still = s.still
	o.Latency = time.Since(o.Frame.Captured)
	if s.key {
		o.Why = s.reason
		st.metrics.keyframeWhy(st.name, s.reason)
		if s.ready() {
			o.ModelRun, o.Waited = s.run, s.waited
		}
	}
	for _, q := range st.qs {
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
	st.metrics.scheduled(st.name, o.Kind())
}
