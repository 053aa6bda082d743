package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/internal/redact"
)

// WebhookConfig configures a WebhookSink. Every field but URL has a
// default.
type WebhookConfig struct {
	// URL receives one POST per event, the event's JSON as the body
	// (docs/events.md). http or https; required.
	URL string
	// Headers are added to every request, e.g. Authorization (the config
	// supplies secrets ${ENV}-substituted; they are never logged).
	// Content-Type is application/json unless set here.
	Headers map[string]string
	// Timeout bounds one attempt, connection to response; default 5 s.
	Timeout time.Duration
	// MaxAttempts is how many times one event is tried before it is given
	// up (counted in Failed); default 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts, doubling
	// from the first to the second; a Retry-After header is honoured up to
	// MaxBackoff. Default 500 ms, 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Queue bounds the events waiting; when full the oldest is dropped and
	// counted. Default 1000.
	Queue int
	// FlushTimeout bounds how long Close keeps delivering what is queued;
	// default 5 s.
	FlushTimeout time.Duration
	// Client sends the requests; default a new http.Client (Timeout
	// applies per attempt either way).
	Client *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *WebhookConfig) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 5
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.Queue == 0 {
		c.Queue = 1000
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 5 * time.Second
	}
	if c.Client == nil {
		c.Client = &http.Client{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the settings (after defaults) and names what is wrong.
func (c *WebhookConfig) Validate() error {
	if c.URL == "" {
		return errors.New("webhook: no URL")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %s: want an http:// or https:// URL", redact.URL(u.String()))
	}
	if c.MaxAttempts < 0 || c.Queue < 0 {
		return fmt.Errorf("webhook %s: attempts %d, queue %d: want positive numbers", redact.URL(u.String()), c.MaxAttempts, c.Queue)
	}
	return nil
}

// WebhookStats are a WebhookSink's counters, for logs and /metrics.
type WebhookStats struct {
	// Published counts events the receiver took (a 2xx answer).
	Published uint64
	// Dropped counts events pushed out of a full queue or still queued
	// when Close gave up.
	Dropped uint64
	// Failed counts events given up: MaxAttempts failed attempts, or an
	// answer that says retrying is no use (4xx other than 408 and 429).
	Failed uint64
	// Errors counts failed attempts.
	Errors uint64
	// Queued is the number of events waiting.
	Queued int
	// LastError is the latest attempt's error, "" after a success.
	LastError string
}

// WebhookSink POSTs each event's JSON to a URL. Publish never blocks:
// events go to a bounded queue that one goroutine delivers in order, each
// tried up to MaxAttempts times with capped exponential backoff.
type WebhookSink struct {
	cfg  WebhookConfig
	log  *slog.Logger
	name string // the URL without secrets, for messages

	mu      sync.Mutex
	queue   ring
	closed  bool
	lastErr string

	wake   chan struct{}
	stop   chan struct{} // closed by Close: deliver what is queued, then return
	ctx    context.Context
	cancel context.CancelFunc // at FlushTimeout after Close: give up
	done   chan struct{}

	published, dropped, failed, errs atomic.Uint64
}

// NewWebhookSink checks cfg and starts the delivering goroutine.
func NewWebhookSink(cfg WebhookConfig) (*WebhookSink, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL)
	ctx, cancel := context.WithCancel(context.Background())
	s := &WebhookSink{
		cfg: cfg, name: redact.URL(u.String()),
		queue: ring{buf: make([]Event, cfg.Queue)},
		wake:  make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, cancel: cancel,
	}
	s.log = cfg.Logger.With("sink", "webhook", "url", s.name)
	go s.run()
	return s, nil
}

// Publish queues ev and returns at once. After Close it returns
// ErrClosed; an event that cannot be marshalled is an error (wrapping
// ErrBadEvent), not queued.
func (s *WebhookSink) Publish(ev Event) error {
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("webhook: %w", ErrClosed)
	}
	if s.queue.push(ev) {
		s.dropped.Add(1)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// Stats returns the counters.
func (s *WebhookSink) Stats() WebhookStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return WebhookStats{
		Published: s.published.Load(), Dropped: s.dropped.Load(), Failed: s.failed.Load(),
		Errors: s.errs.Load(), Queued: s.queue.n, LastError: s.lastErr,
	}
}

// Close stops taking events and keeps delivering what is queued for at
// most FlushTimeout; what is left then is counted as dropped. Close is
// idempotent and safe from any goroutine.
func (s *WebhookSink) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
		time.AfterFunc(s.cfg.FlushTimeout, s.cancel)
	}
	s.mu.Unlock()
	<-s.done
	s.cancel()
	return nil
}

func (s *WebhookSink) run() {
	defer close(s.done)
	defer func() {
		s.mu.Lock()
		s.dropped.Add(uint64(s.queue.n))
		s.queue.clear()
		s.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		ev, ok := s.queue.pop()
		s.mu.Unlock()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				s.mu.Lock()
				empty := s.queue.n == 0
				s.mu.Unlock()
				if empty {
					return
				}
				continue
			}
		}
		if !s.deliver(ev) {
			s.dropped.Add(1) // Close gave up on it
			return
		}
	}
}

// deliver tries ev until it is taken or given up; false when Close's
// flush time is up.
func (s *WebhookSink) deliver(ev Event) bool {
	body, err := json.Marshal(ev)
	if err != nil { // Publish validated it: only a bug gets here
		s.fail(err, "event given up")
		s.failed.Add(1)
		return true
	}
	backoff := s.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		retryAfter, permanent, err := s.post(body)
		if err == nil {
			s.published.Add(1)
			s.mu.Lock()
			recovered := s.lastErr != ""
			s.lastErr = ""
			s.mu.Unlock()
			if recovered {
				s.log.Info("webhook: delivering again")
			}
			return true
		}
		if s.ctx.Err() != nil {
			return false
		}
		if permanent || attempt >= s.cfg.MaxAttempts {
			s.fail(err, fmt.Sprintf("event %s given up after %d attempts", ev.Type, attempt))
			s.failed.Add(1)
			return true
		}
		s.fail(err, "retrying")
		wait := backoff
		if retryAfter > 0 {
			wait = min(retryAfter, s.cfg.MaxBackoff)
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return false
		}
	}
}

// post makes one attempt. permanent says a retry cannot help.
func (s *WebhookSink) post(body []byte) (retryAfter time.Duration, permanent bool, err error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "htcstream")
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	res, err := s.cfg.Client.Do(req)
	if err != nil {
		// The client's error repeats the URL, query and all: name the
		// cause only.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer in %v", s.cfg.Timeout)
		}
		return 0, false, err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return 0, false, nil
	}
	err = fmt.Errorf("answer %s", res.Status)
	if secs, perr := strconv.Atoi(res.Header.Get("Retry-After")); perr == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	code := res.StatusCode
	permanent = code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
	return retryAfter, permanent, err
}

// fail counts a failed attempt and logs it, once while it repeats.
func (s *WebhookSink) fail(err error, next string) {
	s.errs.Add(1)
	msg := err.Error()
	s.mu.Lock()
	repeat := msg == s.lastErr
	s.lastErr = msg
	s.mu.Unlock()
	if repeat {
		s.log.Debug("webhook: "+msg, "then", next)
		return
	}
	s.log.Error("webhook: "+msg, "then", next)
}
