package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/internal/redact"
)

// Runner turns a Source into a stream of frames. For live kinds (RTSP,
// camera, HTTP) it reconnects after every drop — a read error, the end of
// the stream, a failed open, a stall longer than ReadTimeout — with capped
// exponential backoff. Files and image folders end at their end, or start
// again with Config.Loop.
//
// The Runner owns the stream's clock and name: every frame it hands out
// carries Config.StreamID, a Seq counting from 0 that never restarts and a
// PTS that only grows, across reconnects and loop passes, so consumers
// never see the source restart and need not renumber anything.
type Runner struct {
	src   Source
	cfg   Config
	name  string // the location, any password hidden
	id    string
	step  time.Duration // image folders: the interval between pictures
	state atomic.Int32
	ran   atomic.Bool
	// skipped counts the unreadable pictures an image folder passed over.
	skipped atomic.Int64
	// decodeErrors sums the damage the decoders met (decode.Decoder's
	// DecodeErrors), over every session.
	decodeErrors atomic.Int64
}

// NewRunner checks cfg and prepares a runner for src.
func NewRunner(src Source, cfg Config) (*Runner, error) {
	name := redact.URL(src.Location)
	if src.Location == "" {
		return nil, fmt.Errorf("%w: runner for a %s source without a location", ErrBadURL, src.Kind)
	}
	switch src.Kind {
	case File, RTSP, Camera, HTTP, Images:
	default:
		return nil, fmt.Errorf("%w: %s: unknown source kind %q", ErrBadURL, name, src.Kind)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("source %s: %w", name, err)
	}
	cfg.fillDefaults()
	r := &Runner{src: src, cfg: cfg, name: name, id: cfg.StreamID}
	if r.id == "" {
		r.id = name
	}
	r.step = time.Second / defaultImageRate
	if cfg.FrameRate != "" {
		r.step, _ = frameInterval(cfg.FrameRate) // Validate checked it
	}
	return r, nil
}

// State reports the runner's current state; any goroutine may call it.
func (r *Runner) State() State { return State(r.state.Load()) }

// Skipped counts the pictures of an image folder that could not be read
// (each logged as a warning) and were passed over; any goroutine may call
// it.
func (r *Runner) Skipped() int64 { return r.skipped.Load() }

// DecodeErrors counts the damage the source's decoders met so far, over
// every session: packets rejected as invalid data and pictures decoded
// with errors. A session's first is logged as a warning, and its total
// when it ends; any goroutine may call it.
func (r *Runner) DecodeErrors() int64 { return r.decodeErrors.Load() }

// Run opens the source and hands each frame to emit, in order, on Run's
// goroutine; emit owns the frame. Run returns when the source ends (nil
// at the clean end of a file or folder; the error, after every frame
// decoded before it, for a damaged one), when a live source gives up
// (Config.MaxAttempts), when emit returns an error (that error), or when
// ctx is cancelled (ctx's error): a cancel interrupts a blocking open or
// read at once. Every decoder Run opens is closed exactly once before it
// returns, and no goroutine of Run's outlives it. A Runner runs once.
//
// emit runs between reads, so it must not block long on a live source (a
// bounded queue that drops the oldest frame belongs inside it), and it
// must return once ctx ends, or Run cannot.
func (r *Runner) Run(ctx context.Context, emit func(*decode.Frame) error) error {
	if emit == nil {
		return fmt.Errorf("source %s: Run needs a frame consumer", r.name)
	}
	if !r.ran.CompareAndSwap(false, true) {
		return fmt.Errorf("source %s: Run called twice (a Runner runs once)", r.name)
	}
	tl := &timeline{step: defaultStep, id: r.id}
	switch {
	case r.src.Kind == Images:
		return r.runImages(ctx, emit, tl)
	case r.src.Kind.Live():
		return r.runLive(ctx, emit, tl)
	default:
		return r.runFile(ctx, emit, tl)
	}
}

// emitError marks an error that came from the consumer, not the source.
type emitError struct{ err error }

func (e *emitError) Error() string { return e.err.Error() }
func (e *emitError) Unwrap() error { return e.err }

func (r *Runner) runFile(ctx context.Context, emit func(*decode.Frame) error, tl *timeline) error {
	r.set(Event{State: StateConnecting})
	for pass := 1; ; pass++ {
		n, err := r.session(ctx, emit, tl, false)
		// A pass that gave no frame would loop without end.
		if err != nil || !r.cfg.Loop || n == 0 || ctx.Err() != nil {
			return r.finish(ctx, err)
		}
		r.cfg.Logger.Debug("source loops", "source", r.name, "pass", pass+1, "next_seq", tl.seq)
	}
}

// ErrStop, returned by emit (or wrapped), ends Run cleanly: the consumer
// wants no more frames (a frame limit), which is no failure. Run then
// returns nil.
var ErrStop = errors.New("the consumer wants no more frames")

// finish reports how a source that will not be retried ended. A cancel or
// ErrStop is a normal end: the event carries no error (it was logged as
// err="context canceled").
func (r *Runner) finish(ctx context.Context, err error) error {
	var ee *emitError
	switch {
	case ctx.Err() != nil:
		r.set(Event{State: StateEnded})
		return ctx.Err()
	case errors.As(err, &ee) && errors.Is(ee.err, ErrStop):
		r.set(Event{State: StateEnded})
		return nil
	case errors.As(err, &ee):
		r.set(Event{State: StateEnded, Err: ee.err})
		return ee.err
	case err != nil:
		r.set(Event{State: StateFailed, Err: err})
		return err
	}
	r.set(Event{State: StateEnded})
	return nil
}

// session opens the source once and delivers its frames until it ends. It
// returns how many frames it delivered and why it stopped (nil at EOF).
func (r *Runner) session(ctx context.Context, emit func(*decode.Frame) error, tl *timeline, live bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	octx, cancel := ctx, context.CancelFunc(func() {})
	if live {
		octx, cancel = context.WithTimeout(ctx, r.cfg.OpenTimeout)
	}
	d, err := decode.OpenContext(octx, r.src.Location, decode.Options{StreamID: r.id, Format: r.src.Format, Input: r.inputOptions(), HWDecode: r.cfg.HWDecode, Tap: r.cfg.Tap,
		Live: live})
	timedOut := octx.Err() != nil && ctx.Err() == nil
	cancel()
	if err != nil {
		if timedOut {
			return 0, fmt.Errorf("%w (no answer within the open timeout %v)", err, r.cfg.OpenTimeout)
		}
		return 0, err
	}
	defer d.Close()
	stop := context.AfterFunc(ctx, d.Interrupt)
	defer stop()

	var dog *watchdog
	if live {
		dog = startWatchdog(d, r.cfg.ReadTimeout)
		defer dog.stop()
	}
	tl.newSession()
	n := 0
	var damaged int64 // this session's decode errors
	defer func() {
		if damaged > 0 {
			r.cfg.Logger.Warn("damaged input: decode errors in this pass (each a picture lost or decoded with errors)",
				"source", r.name, "decode_errors", damaged, "frames", n)
		}
	}()
	for {
		dog.enter()
		f, err := d.Next()
		dog.leave()
		if e := d.DecodeErrors(); e > damaged {
			if damaged == 0 {
				r.cfg.Logger.Warn("damaged input: the decoder met errors; pictures are lost or concealed (counted in the summary and htcstream_decode_errors_total)",
					"source", r.name, "frame", tl.seq)
			}
			r.decodeErrors.Add(e - damaged)
			damaged = e
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if dog.fired() && ctx.Err() == nil {
				err = fmt.Errorf("%w (%w: no data within the read timeout %v)", err, decode.ErrTimeout, r.cfg.ReadTimeout)
			}
			return n, err
		}
		if ctx.Err() != nil {
			// Frames drained after a cancel's interrupt go nowhere.
			return n, ctx.Err()
		}
		tl.stamp(f)
		if n == 0 && r.State() != StateLive {
			r.set(Event{State: StateLive})
		}
		n++
		if err := emit(f); err != nil {
			return n, &emitError{err}
		}
	}
}

// inputOptions merges the demuxer options: the Source's, then the Config's.
func (r *Runner) inputOptions() map[string]string {
	o := make(map[string]string, len(r.src.Options)+4)
	for k, v := range r.src.Options {
		o[k] = v
	}
	// Half the read timeout: FFmpeg's first socket timeout only flushes the
	// packet its parser held back (a packet, so no error yet); the second
	// returns the error. Two halves make the whole.
	us := strconv.FormatInt((r.cfg.ReadTimeout / 2).Microseconds(), 10)
	switch r.src.Kind {
	case RTSP:
		if r.cfg.Transport != "" {
			o["rtsp_transport"] = r.cfg.Transport
		}
		if o["rtsp_transport"] == "" {
			o["rtsp_transport"] = DefaultTransport
		}
		// FFmpeg 5.1's rtsp "timeout" is the socket I/O timeout in µs (the
		// old "stimeout"); without it a silent TCP peer blocks forever.
		setDefault(o, "timeout", us)
		// Audio would only cost a second RTP session nobody reads.
		setDefault(o, "allowed_media_types", "video")
		// Every frame has the camera's own timestamp: probing the frame
		// rate (20 frames by default) held the first frames back about a
		// second and then let them go in one burst, which overflowed the
		// preview's queue (the slow-model test lost frames 5-9 of 200).
		setDefault(o, "fpsprobesize", "0")
	case HTTP:
		setDefault(o, "rw_timeout", us)
	case Camera:
		for k, v := range map[string]string{"video_size": r.cfg.VideoSize, "framerate": r.cfg.FrameRate, "input_format": r.cfg.InputFormat} {
			if v != "" {
				o[k] = v
			}
		}
	}
	return o
}

func setDefault(o map[string]string, k, v string) {
	if _, ok := o[k]; !ok {
		o[k] = v
	}
}
