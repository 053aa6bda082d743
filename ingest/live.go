package ingest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"time"

	"github.com/htcstream/htcstream/decode"
)

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
	var liveUntil time.Time // when the last session that gave frames ended
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
			liveUntil = time.Now()
		}
		failures++
		if r.cfg.MaxAttempts > 0 && failures >= r.cfg.MaxAttempts {
			return r.finish(ctx, fmt.Errorf("source %s: giving up after %d failed attempts in a row: %w", r.name, failures, err))
		}
		delay := r.backoff(failures)
		if c := r.recentCap(); time.Since(liveUntil) < recentlyLive && delay > c {
			// A camera that was live a moment ago is likely rebooting or
			// its network hiccupped: back soon. Full backoff left it dark
			// up to MaxBackoff after it returned (9 s seen).
			delay = r.jitter(c)
		}
		if errors.Is(err, decode.ErrUnauthorized) || errors.Is(err, decode.ErrNotFound) {
			// Credentials and paths do not mend themselves, and a server
			// may lock an account that keeps failing: wait the longest.
			delay = r.jitter(r.cfg.MaxBackoff)
		}
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

// recentlyLive is how long after its last frames a source counts as live
// a moment ago, for recentCap.
const recentlyLive = time.Minute

// recentCap bounds the backoff of a source that was live within
// recentlyLive: a fifth of MaxBackoff (2 s by default), at least
// MinBackoff.
func (r *Runner) recentCap() time.Duration {
	return max(r.cfg.MinBackoff, r.cfg.MaxBackoff/5)
}

// backoff is the wait after the n-th failed attempt in a row (n ≥ 1).
func (r *Runner) backoff(n int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < n && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return r.jitter(min(d, r.cfg.MaxBackoff))
}

// jitter shortens a wait by a random part of up to Config.Jitter.
func (r *Runner) jitter(d time.Duration) time.Duration {
	if r.cfg.Jitter > 0 {
		d -= time.Duration(rand.Float64() * r.cfg.Jitter * float64(d))
	}
	return d
}
