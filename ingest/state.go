package ingest

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
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
	// (failed), the consumer's error when emit ended the run (ended). A
	// normal end (the input's end, a cancel, ErrStop) has none.
	Err error
	// Reason names a kind of Err a person can act on, for retrying and
	// failed: ReasonUnauthorized, ReasonNotFound, ReasonTimedOut, or ""
	// for any other.
	Reason string
}

// Reasons a source is retrying or failed (Event.Reason).
const (
	// ReasonUnauthorized: the server refused the credentials (401). The
	// runner waits Config.MaxBackoff before trying again.
	ReasonUnauthorized = "unauthorized"
	// ReasonNotFound: the server has no stream at the URL's path (404).
	// The runner waits Config.MaxBackoff before trying again.
	ReasonNotFound = "not found"
	// ReasonTimedOut: the server accepted the connection but did not
	// answer within the open timeout or FFmpeg's socket timeout, or a live
	// stream sent no data for the read timeout.
	ReasonTimedOut = "timed out"
)

// reason classifies why a source is retrying or failed.
func reason(err error) string {
	switch {
	case errors.Is(err, decode.ErrUnauthorized):
		return ReasonUnauthorized
	case errors.Is(err, decode.ErrNotFound):
		return ReasonNotFound
	case errors.Is(err, decode.ErrTimeout):
		return ReasonTimedOut
	}
	return ""
}

func (r *Runner) set(e Event) {
	e.Source = r.name
	if e.Reason == "" && (e.State == StateRetrying || e.State == StateFailed) {
		e.Reason = reason(e.Err)
	}
	r.state.Store(int32(e.State))
	attrs := []any{"source", r.name, "state", e.State.String()}
	if e.Reason != "" {
		attrs = append(attrs, "reason", e.Reason)
	}
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
