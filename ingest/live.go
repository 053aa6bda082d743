package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// State is where a Runner is in its source's life.
type State int32

const (
	// StateIdle: Run has not started.
	StateIdle State = iota
	// StateConnecting: opening the source (a new attempt for live kinds).
	StateConnecting
	// StateLive: frames are flowing.
	StateLive
	// StateRetrying: a live source dropped or could not be opened; the
	// runner waits out its backoff before the next attempt.
	StateRetrying
	// StateFailed: the source ended with an error (a damaged or missing
	// file, or a live source that used up Config.MaxAttempts).
	StateFailed
	// StateEnded: the source ended cleanly (end of a file or folder) or Run's
	// context was cancelled.
	StateEnded
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateLive:
		return "live"
	case StateRetrying:
		return "retrying"
	case StateFailed:
		return "failed"
	case StateEnded:
		return "ended"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Event is one state change of a Runner.
type Event struct {
	// Source names the source, any password hidden.
	Source string
	State  State
	// Attempt counts the failed attempts in a row so far (retrying, failed).
	Attempt int
	// Delay is the wait before the next attempt (retrying).
	Delay time.Duration
	// Err is why: the drop or open failure (retrying), the final error
	// (failed), the context's error when Run was cancelled (ended).
	Err error
}

// Config tunes a Runner. Every field is optional; the zero value works.
type Config struct {
	// StreamID names the stream in every Frame and log line. Default: the
	// source location with any password hidden.
	StreamID string

	// Transport is the RTSP transport, "tcp" or "udp" (FFmpeg's
	// rtsp_transport). Default: what the Source asks for, else "tcp".
	Transport string
	// OpenTimeout bounds one attempt to open a live source, stream probing
	// included; a server that accepts the connection and then says nothing
	// costs no more than this. Default: 10 s.
	OpenTimeout time.Duration
	// ReadTimeout: a live source that sends no data for this long counts as
	// dropped (data, not pictures: a long wait for a keyframe is no drop).
	// Half of it is FFmpeg's socket I/O timeout (rtsp "timeout", http
	// "rw_timeout"). Default: 5 s.
	ReadTimeout time.Duration
	// MinBackoff is the wait before the first retry; each failed attempt in
	// a row doubles it up to MaxBackoff. Defaults: 500 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// Jitter shortens each wait by a random part of up to this fraction
	// (0 to 1), so many streams cut by one outage do not retry in step.
	// Default: 0.
	Jitter float64
	// MaxAttempts is how many failed attempts in a row a live source may
	// make before the runner gives up (state failed). A session that
	// delivered frames resets the count. Default: 0, never give up.
	MaxAttempts int

	// VideoSize ("1280x720"), FrameRate ("30", "30000/1001") and
	// InputFormat ("mjpeg", "yuyv422") are the v4l2 demuxer's options for
	// cameras. Default: the device's. FrameRate is also the rate of an image
	// folder, default 25 (as FFmpeg's image2).
	VideoSize, FrameRate, InputFormat string

	// HWDecode asks for hardware decoding, "cuda" or "vaapi"; default
	// software. Missing hardware falls back to software with a log line.
	HWDecode string

	// OnState hears every state change, on Run's goroutine, in order. It
	// must return quickly: frames wait while it runs.
	OnState func(Event)
	// Logger gets a line per state change. Default: slog.Default().
	Logger *slog.Logger
}

const (
	defaultOpenTimeout = 10 * time.Second
	defaultReadTimeout = 5 * time.Second
	defaultMinBackoff  = 500 * time.Millisecond
	defaultMaxBackoff  = 10 * time.Second
	defaultImageRate   = 25
	// defaultStep is the frame interval assumed before two frames showed
	// the real one.
	defaultStep = 40 * time.Millisecond
)

// Validate checks c and reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if c.HWDecode != "" && !slices.Contains(decode.HWDecoders, c.HWDecode) {
		errs = append(errs, fmt.Errorf("hardware decoder %q: want one of %v", c.HWDecode, decode.HWDecoders))
	}
	switch c.Transport {
	case "", "tcp", "udp":
	default:
		errs = append(errs, fmt.Errorf("transport %q: want tcp or udp", c.Transport))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"open timeout", c.OpenTimeout}, {"read timeout", c.ReadTimeout}, {"min backoff", c.MinBackoff}, {"max backoff", c.MaxBackoff}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", d.name, d.v))
		}
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("min backoff %v is above max backoff %v", c.MinBackoff, c.MaxBackoff))
	}
	if c.Jitter < 0 || c.Jitter > 1 {
		errs = append(errs, fmt.Errorf("jitter %v: want 0 to 1", c.Jitter))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("max attempts %d: must not be negative (0 = retry forever)", c.MaxAttempts))
	}
	if c.FrameRate != "" {
		if _, err := frameInterval(c.FrameRate); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ingest config: %w", err)
	}
	return nil
}

func (c *Config) fillDefaults() {
	if c.OpenTimeout == 0 {
		c.OpenTimeout = defaultOpenTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = defaultReadTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = defaultMinBackoff
		if c.MaxBackoff > 0 {
			c.MinBackoff = min(c.MinBackoff, c.MaxBackoff)
		}
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(defaultMaxBackoff, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Runner turns a Source into a stream of frames. For live kinds (RTSP,
// camera, HTTP) it reconnects after every drop — a read error, the end of
// the stream, a failed open, a stall longer than ReadTimeout — with capped
// exponential backoff, and keeps Seq and PTS increasing across sessions so
// consumers never see the source restart. Files and image folders end at
// their end.
type Runner struct {
	src   Source
	cfg   Config
	name  string // the location, any password hidden
	id    string
	step  time.Duration // image folders: the interval between pictures
	state atomic.Int32
	ran   atomic.Bool
}

// NewRunner checks cfg and prepares a runner for src.
func NewRunner(src Source, cfg Config) (*Runner, error) {
	name := redact(src.Location)
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
	tl := &timeline{step: defaultStep}
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
	_, err := r.session(ctx, emit, tl, false)
	return r.finish(ctx, err)
}

// finish reports how a source that will not be retried ended.
func (r *Runner) finish(ctx context.Context, err error) error {
	var ee *emitError
	switch {
	case ctx.Err() != nil:
		r.set(Event{State: StateEnded, Err: ctx.Err()})
		return ctx.Err()
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

func (r *Runner) runLive(ctx context.Context, emit func(*decode.Frame) error, tl *timeline) error {
	if r.src.Kind == Camera {
		// A device that was never there is a setup mistake worth saying at
		// once; one that vanishes later (unplugged) is retried like any drop.
		if _, err := os.Stat(r.src.Location); errors.Is(err, fs.ErrNotExist) {
			return r.finish(ctx, fmt.Errorf("camera %s does not exist (is it plugged in? ls /dev/video*)", r.name))
		} else if err != nil {
			return r.finish(ctx, fmt.Errorf("camera %s: %w", r.name, err))
		}
	}
	failures := 0
	for {
		r.set(Event{State: StateConnecting, Attempt: failures})
		n, err := r.session(ctx, emit, tl, true)
		var ee *emitError
		if ctx.Err() != nil || errors.As(err, &ee) {
			return r.finish(ctx, err)
		}
		if err == nil {
			err = fmt.Errorf("%s: the stream ended", r.name)
		}
		if n > 0 {
			failures = 0
		}
		failures++
		if r.cfg.MaxAttempts > 0 && failures >= r.cfg.MaxAttempts {
			return r.finish(ctx, fmt.Errorf("source %s: giving up after %d failed attempts in a row: %w", r.name, failures, err))
		}
		delay := r.backoff(failures)
		r.set(Event{State: StateRetrying, Attempt: failures, Delay: delay, Err: err})
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return r.finish(ctx, nil)
		case <-t.C:
		}
	}
}

// backoff is the wait after the n-th failed attempt in a row (n ≥ 1).
func (r *Runner) backoff(n int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < n && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxBackoff)
	if r.cfg.Jitter > 0 {
		d -= time.Duration(rand.Float64() * r.cfg.Jitter * float64(d))
	}
	return d
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
	d, err := decode.OpenContext(octx, r.src.Location, decode.Options{StreamID: r.id, Format: r.src.Format, Input: r.inputOptions(), HWDecode: r.cfg.HWDecode})
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
	for {
		dog.enter()
		f, err := d.Next()
		dog.leave()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if dog.fired() && ctx.Err() == nil {
				err = fmt.Errorf("%w (no data within the read timeout %v)", err, r.cfg.ReadTimeout)
			}
			return n, err
		}
		if ctx.Err() != nil {
			// Frames drained after a cancel's interrupt go nowhere.
			return n, ctx.Err()
		}
		tl.stamp(f, live)
		if n == 0 {
			r.set(Event{State: StateLive})
		}
		n++
		if err := emit(f); err != nil {
			return n, &emitError{err}
		}
	}
}

// watchdog interrupts a decoder whose input went quiet: no packet read for
// the timeout while the runner waits in Next. It counts packets, not
// pictures, so a camera's long wait for its next keyframe is no stall, and
// the consumer's time with a frame does not count either. A nil watchdog
// does nothing.
type watchdog struct {
	d       *decode.Decoder
	timeout time.Duration
	waiting atomic.Int64 // when the current Next began (unix ns); 0 outside Next
	stalled atomic.Bool

	mu      sync.Mutex // the timer's runs may overlap by a hair
	timer   *time.Timer
	stopped bool
	packets int64
	moved   time.Time // when the packet count last changed, as seen
}

func startWatchdog(d *decode.Decoder, timeout time.Duration) *watchdog {
	w := &watchdog{d: d, timeout: timeout, moved: time.Now()}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(w.period(), w.check)
	return w
}

// period is how often the watchdog looks: a stall is seen within 1.25
// timeouts.
func (w *watchdog) period() time.Duration { return max(w.timeout/4, time.Millisecond) }

func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := time.Now()
	if p := w.d.Packets(); p != w.packets {
		w.packets, w.moved = p, now
	}
	if began := w.waiting.Load(); began != 0 {
		since := w.moved
		if b := time.Unix(0, began); b.After(since) {
			since = b
		}
		if now.Sub(since) >= w.timeout {
			w.stalled.Store(true)
			w.d.Interrupt()
			return
		}
	}
	w.timer.Reset(w.period())
}

func (w *watchdog) enter() {
	if w != nil {
		w.waiting.Store(time.Now().UnixNano())
	}
}

func (w *watchdog) leave() {
	if w != nil {
		w.waiting.Store(0)
	}
}

func (w *watchdog) fired() bool { return w != nil && w.stalled.Load() }

// stop ends the watchdog for good; a check already running sees it.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
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
			o["rtsp_transport"] = "tcp"
		}
		// FFmpeg 5.1's rtsp "timeout" is the socket I/O timeout in µs (the
		// old "stimeout"); without it a silent TCP peer blocks forever.
		setDefault(o, "timeout", us)
		// Audio would only cost a second RTP session nobody reads.
		setDefault(o, "allowed_media_types", "video")
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

func (r *Runner) set(e Event) {
	e.Source = r.name
	r.state.Store(int32(e.State))
	attrs := []any{"source", r.name, "state", e.State.String()}
	if e.Attempt > 0 {
		attrs = append(attrs, "attempt", e.Attempt)
	}
	if e.Delay > 0 {
		attrs = append(attrs, "retry_in", e.Delay)
	}
	level := slog.LevelInfo
	if e.State == StateConnecting && e.Attempt > 0 {
		// The retrying line before it already said all there is.
		level = slog.LevelDebug
	}
	if e.Err != nil {
		attrs = append(attrs, "err", e.Err.Error())
		if e.State == StateRetrying || e.State == StateFailed {
			level = slog.LevelWarn
		}
	}
	r.cfg.Logger.Log(context.Background(), level, "source state", attrs...)
	if r.cfg.OnState != nil {
		r.cfg.OnState(e)
	}
}

// runImages decodes a folder's pictures one file at a time, in natural name
// order (img2 before img10). A file each keeps every picture's own size and
// lets an error name the file.
func (r *Runner) runImages(ctx context.Context, emit func(*decode.Frame) error, tl *timeline) error {
	r.set(Event{State: StateConnecting})
	files, err := imageFiles(r.src.Location)
	if err != nil {
		return r.finish(ctx, err)
	}
	// Every image is a session of its own, so the step never comes from
	// two pictures: it is the folder's rate throughout.
	tl.step = r.step
	for i, path := range files {
		if ctx.Err() != nil {
			break
		}
		f, err := decodeImage(ctx, path, r.id)
		if err != nil {
			return r.finish(ctx, fmt.Errorf("image folder %s: %w", r.name, err))
		}
		tl.newSession()
		tl.stamp(f, false)
		if i == 0 {
			r.set(Event{State: StateLive})
		}
		if err := emit(f); err != nil {
			return r.finish(ctx, &emitError{err})
		}
	}
	return r.finish(ctx, nil)
}

func decodeImage(ctx context.Context, path, streamID string) (*decode.Frame, error) {
	d, err := decode.OpenContext(ctx, path, decode.Options{StreamID: streamID})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.Next()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s holds no picture", path)
	}
	return f, err
}

// imageExts are the still formats a folder source reads.
var imageExts = map[string]bool{".png": true, ".jpg": true, ".jpeg": true}

func imageFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("image folder %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && imageExts[strings.ToLower(filepath.Ext(e.Name()))] {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("image folder %s has no .png, .jpg or .jpeg files", dir)
	}
	slices.SortFunc(names, naturalCompare)
	for i, n := range names {
		names[i] = filepath.Join(dir, n)
	}
	return names, nil
}

// naturalCompare orders names as people number files: runs of digits
// compare by value, so frame9 comes before frame10. Names equal by value
// (img2, img002) fall back to byte order, so the order is total.
func naturalCompare(a, b string) int {
	if c := naturalCore(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

func naturalCore(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// frameInterval parses a frame rate ("25", "29.97", "30000/1001").
func frameInterval(rate string) (time.Duration, error) {
	num, den := rate, "1"
	if i := strings.IndexByte(rate, '/'); i >= 0 {
		num, den = rate[:i], rate[i+1:]
	}
	n, err1 := strconv.ParseFloat(num, 64)
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || n <= 0 || d <= 0 || n/d > 1000 || n/d < 1e-3 {
		return 0, fmt.Errorf("frame rate %q: want a positive rate such as 25 or 30000/1001", rate)
	}
	return time.Duration(float64(time.Second) * d / n), nil
}

// timeline renumbers frames across sessions: Seq never restarts and PTS
// never goes back, so a reconnect looks to consumers like a short gap.
type timeline struct {
	seq     int64
	offset  time.Duration // added to the current session's PTS
	last    time.Duration // the last PTS handed out
	step    time.Duration // the last frame interval seen
	started bool          // a frame has been handed out
	fresh   bool          // the next frame opens a session
	prev    time.Duration // the session's previous raw PTS
}

func (t *timeline) newSession() { t.fresh = true }

func (t *timeline) stamp(f *decode.Frame, live bool) {
	raw := f.PTS
	switch {
	case t.fresh && t.started:
		// A new session restarts its clock: continue one frame after the
		// last picture.
		t.offset = t.last + t.step - raw
	case !t.fresh:
		if dt := raw - t.prev; dt > 0 && dt < time.Second {
			t.step = dt
		}
	}
	t.fresh = false
	t.prev = raw
	pts := raw + t.offset
	if live && t.started && pts <= t.last {
		// A live clock that jumps back (a camera or server resetting its
		// timestamps mid-session) must not reach consumers.
		pts = t.last + t.step
		t.offset = pts - raw
	}
	f.PTS = pts
	f.Seq = t.seq
	t.seq++
	t.last = pts
	t.started = true
}
