package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/htcstream/htcstream/decode"
)

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

	// Loop starts a file or image folder again at its end, its clock
	// continuing: the next pass's first frame follows the last one by a
	// frame interval, Seq going on (a preview that keeps serving). Live
	// kinds ignore it: they reconnect anyway. Default: off, a file ends at
	// its end.
	Loop bool

	// HWDecode asks for hardware decoding, "cuda" or "vaapi"; default
	// software. Missing hardware falls back to software with a log line.
	HWDecode string

	// OnState hears every state change, on Run's goroutine, in order. It
	// must return quickly: frames wait while it runs.
	OnState func(Event)
	// Tap, when set, sees the compressed video packets of every session
	// (decode.PacketTap): Begin at each (re)connect, End when it closes.
	Tap decode.PacketTap
	// Logger gets a line per state change. Default: slog.Default().
	Logger *slog.Logger
}

// The defaults of Config's durations and transport; the run's configuration
// (pipeline.DefaultRunConfig) shows these same values.
const (
	DefaultTransport   = "tcp"
	DefaultOpenTimeout = 10 * time.Second
	DefaultReadTimeout = 5 * time.Second
	DefaultMaxBackoff  = 10 * time.Second

	defaultMinBackoff = 500 * time.Millisecond
	defaultImageRate  = 25
	// defaultStep is the frame interval assumed before two frames showed
	// the real one.
	defaultStep = 40 * time.Millisecond
)

// Validate checks c and reports every bad field at once.
func (c Config) Validate() error {
	var errs []error
	if err := decode.CheckHWDecode(c.HWDecode); err != nil {
		errs = append(errs, err)
	}
	if c.Transport != "" {
		if err := CheckTransport(c.Transport); err != nil {
			errs = append(errs, err)
		}
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

// CheckTransport accepts the RTSP transports: tcp and udp.
func CheckTransport(t string) error {
	switch t {
	case "tcp", "udp":
		return nil
	}
	return fmt.Errorf("transport %q: want tcp or udp", t)
}

func (c *Config) fillDefaults() {
	if c.OpenTimeout == 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = defaultMinBackoff
		if c.MaxBackoff > 0 {
			c.MinBackoff = min(c.MinBackoff, c.MaxBackoff)
		}
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
