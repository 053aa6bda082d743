package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Drawer annotates frames before the sinks see them; nil leaves frames
	// as decoded.
	Drawer Drawer
	// Sinks returns the sinks of a stream (called once per stream at start).
	Sinks func(stream string) ([]Sink, error)
	// Batch configures the shared batcher (default: batches of 1, no wait).
	Batch infer.BatcherConfig
	// Metrics receives counts and timings; nil keeps none.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

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

	// Sources -> one shared channel, through a per-source mailbox for live
	// sources (newest frame wins) or a blocking hand-over for files.
	in := make(chan item)
	var srcWG sync.WaitGroup
	for i, src := range cfg.Sources {
		srcWG.Add(1)
		go func(i int, src Source) {
			defer srcWG.Done()
			if err := runSource(drain, hard, i, src, in, cfg.Metrics); err != nil && !errors.Is(err, context.Canceled) {
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
		return fmt.Sprintf("%dx%d", it.frame.Width, it.frame.Height)
	})
	go func() {
		if err := b.Run(hard, in, batches); err != nil && !errors.Is(err, context.Canceled) {
			fail(err)
		}
	}()

	// Per-stream output queues keep each stream's order and let a slow
	// sink hold up only its own stream's drawing, not inference.
	outs := make([]chan *Output, len(cfg.Sources))
	var sinkWG sync.WaitGroup
	for i := range outs {
		outs[i] = make(chan *Output, 4)
		sinkWG.Add(1)
		go func(i int) {
			defer sinkWG.Done()
			if err := runSinks(hard, names[i], outs[i], cfg.Drawer, sinks[i], cfg.Metrics); err != nil {
				cfg.Logger.Error("stream output failed", "stream", names[i], "err", err)
				fail(&StreamError{Stream: names[i], Err: err})
			}
		}(i)
	}

	inferErr := runInference(hard, batches, cfg.Detector, outs, cfg.Metrics)
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

// runSource runs one source, handing its frames to in.
func runSource(drain, hard context.Context, i int, src Source, in chan<- item, m *Metrics) error {
	name := src.Name()
	if !src.Live() {
		return src.Run(drain, func(f *decode.Frame) bool {
			m.frameIn(name)
			select {
			case in <- item{i, f}:
				return true
			case <-hard.Done():
				return false
			}
		})
	}
	// A live source writes into a one-frame mailbox, replacing a frame
	// that still waits there (counted as dropped); a forwarder hands the
	// newest frame on whenever the batcher takes one. emit never blocks:
	// it is the mailbox's only sender.
	mailbox := make(chan *decode.Frame, 1)
	fwdDone := make(chan struct{})
	go func() {
		defer close(fwdDone)
		for f := range mailbox {
			select {
			case in <- item{i, f}:
			case <-hard.Done():
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
func runInference(ctx context.Context, batches <-chan []item, det Detector, outs []chan *Output, m *Metrics) error {
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
		res, tm, err := det.Detect(imgs)
		if err != nil {
			return fmt.Errorf("inference: %w", err)
		}
		m.batch(len(batch), time.Since(t0), tm)
		for k, it := range batch {
			select {
			case outs[it.stream] <- &Output{Stream: it.frame.StreamID, Frame: it.frame, Result: res[k]}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// runSinks draws each output of one stream and hands it to the stream's
// sinks. A failing sink is reported once and dropped; the others go on.
func runSinks(ctx context.Context, name string, outs <-chan *Output, d Drawer, sinks []Sink, m *Metrics) error {
	failed := make([]bool, len(sinks))
	var errs []error
	for o := range outs {
		if ctx.Err() != nil {
			continue // hard stop: drop what is left, keep draining
		}
		o.Stream = name
		if d != nil {
			t0 := time.Now()
			if err := d.Draw(o); err != nil {
				errs = append(errs, fmt.Errorf("draw frame %d: %w", o.Frame.Seq, err))
			}
			m.draw(time.Since(t0))
		}
		o.Latency = time.Since(o.Frame.Captured)
		for k, s := range sinks {
			if failed[k] {
				continue
			}
			if err := s.Write(o); err != nil {
				failed[k] = true
				errs = append(errs, fmt.Errorf("frame %d: %w", o.Frame.Seq, err))
			}
		}
		m.frameOut(name, o.Latency)
	}
	return errors.Join(errs...)
}
