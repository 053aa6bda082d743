package events

import (
	"slices"

	"github.com/htcstream/htcstream/internal/mqtttest"
	"github.com/htcstream/htcstream/internal/poll"

	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func quickWebhook(url string) WebhookConfig {
	return WebhookConfig{
		URL: url, Timeout: 2 * time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{}, nil)),
	}
}

// receiver records what a test server was sent.
type receiver struct {
	mu     sync.Mutex
	bodies []string
	hdrs   []http.Header
}

func (r *receiver) add(req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, string(b))
	r.hdrs = append(r.hdrs, req.Header.Clone())
	r.mu.Unlock()
}

func (r *receiver) get() ([]string, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...), append([]http.Header(nil), r.hdrs...)
}

// The receiver fails the first two calls; the third attempt delivers the
// same body, with the configured headers.
func TestWebhookRetries(t *testing.T) {
	var rec receiver
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		rec.mu.Lock()
		n := len(rec.bodies)
		rec.mu.Unlock()
		if n <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	logs := &mqtttest.SyncBuffer{}
	cfg := quickWebhook(srv.URL + "/hook?token=secret")
	cfg.Headers = map[string]string{"Authorization": "Bearer xyz"}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := NewWebhookSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ev := testEvent(t, EventNew, "front", 7, "person")
	if err := s.Publish(ev); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "delivery", 10*time.Second, func() bool { return s.Stats().Published == 1 })
	bodies, hdrs := rec.get()
	if len(bodies) != 3 {
		t.Fatalf("%d calls, want 3", len(bodies))
	}
	want, _ := ev.MarshalJSON()
	for i := range bodies {
		if bodies[i] != string(want) {
			t.Errorf("call %d body %s, want %s", i, bodies[i], want)
		}
		if hdrs[i].Get("Authorization") != "Bearer xyz" || hdrs[i].Get("Content-Type") != "application/json" {
			t.Errorf("call %d headers %v", i, hdrs[i])
		}
	}
	st := s.Stats()
	if st.Errors != 2 || st.Failed != 0 || st.Dropped != 0 || st.LastError != "" {
		t.Errorf("stats %+v", st)
	}
	if l := logs.String(); strings.Count(l, "level=ERROR") != 1 || strings.Contains(l, "secret") || strings.Contains(l, "xyz") {
		t.Errorf("want one error line without secrets:\n%s", l)
	}
}

// A receiver that hangs does not block Publish: the queue fills, the
// oldest are dropped and counted, and the rest go out in order once it
// answers again.
func TestWebhookSlowReceiver(t *testing.T) {
	var rec receiver
	arrived := make(chan struct{}, 100)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		arrived <- struct{}{}
		<-release
	}))
	defer srv.Close()
	defer close(release) // before srv.Close, which waits for handlers
	cfg := quickWebhook(srv.URL)
	cfg.Queue = 3
	cfg.Timeout = 10 * time.Second
	s, err := NewWebhookSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Publish(testEvent(t, EventNew, "c", 1, "car"))
	<-arrived // event 1 is in flight, its receiver hangs

	published := make(chan struct{})
	go func() {
		for i := int64(2); i <= 10; i++ {
			s.Publish(testEvent(t, EventNew, "c", i, "car"))
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked behind a hanging receiver")
	}
	if st := s.Stats(); st.Dropped != 6 || st.Queued != 3 {
		t.Fatalf("stats %+v, want 6 dropped and 3 queued", st)
	}
	release <- struct{}{}
	for range 3 {
		<-arrived
		release <- struct{}{}
	}
	poll.Until(t, "4 published", 10*time.Second, func() bool { return s.Stats().Published == 4 })
	bodies, _ := rec.get()
	var got []int64
	for _, b := range bodies {
		got = append(got, decodeEvent(t, []byte(b)).TrackID)
	}
	if want := []int64{1, 8, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("delivered tracks %v, want %v", got, want)
	}
}

// An attempt that times out is retried; a 4xx answer is given up at once;
// MaxAttempts bounds the retries.
func TestWebhookTimeoutAndGiveUp(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body) // so the server notices when the client hangs up
		mu.Lock()
		calls[r.URL.Path]++
		n := calls[r.URL.Path]
		mu.Unlock()
		switch r.URL.Path {
		case "/slow":
			if n == 1 {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
				return
			}
		case "/bad":
			http.Error(w, "no such hook", http.StatusNotFound)
			return
		case "/down":
			w.Header().Set("Retry-After", "0")
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
	}))
	defer srv.Close()
	count := func(path string) int { mu.Lock(); defer mu.Unlock(); return calls[path] }

	cfg := quickWebhook(srv.URL + "/slow")
	cfg.Timeout = 100 * time.Millisecond
	slow, _ := NewWebhookSink(cfg)
	slow.Publish(testEvent(t, EventNew, "c", 1, "car"))
	poll.Until(t, "the retry after a timeout", 10*time.Second, func() bool { return slow.Stats().Published == 1 })
	if st := slow.Stats(); st.Errors != 1 || count("/slow") != 2 {
		t.Errorf("slow: stats %+v after %d calls", st, count("/slow"))
	}
	slow.Close()

	bad, _ := NewWebhookSink(quickWebhook(srv.URL + "/bad"))
	bad.Publish(testEvent(t, EventNew, "c", 1, "car"))
	poll.Until(t, "the 404 to be given up", 10*time.Second, func() bool { return bad.Stats().Failed == 1 })
	if count("/bad") != 1 {
		t.Errorf("a 404 was tried %d times", count("/bad"))
	}
	bad.Close()

	cfg = quickWebhook(srv.URL + "/down")
	cfg.MaxAttempts = 3
	down, _ := NewWebhookSink(cfg)
	down.Publish(testEvent(t, EventNew, "c", 1, "car"))
	poll.Until(t, "3 attempts", 10*time.Second, func() bool { return down.Stats().Failed == 1 })
	if st := down.Stats(); count("/down") != 3 || st.Errors != 3 || !strings.Contains(st.LastError, "502") {
		t.Errorf("down: %d calls, stats %+v", count("/down"), st)
	}
	down.Close()
}

// Close delivers what is queued; with the receiver gone it gives up after
// FlushTimeout and counts the rest as dropped.
func TestWebhookClose(t *testing.T) {
	var rec receiver
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rec.add(r) }))
	s, _ := NewWebhookSink(quickWebhook(srv.URL))
	for i := range 5 {
		s.Publish(testEvent(t, EventNew, "c", int64(i), "car"))
	}
	s.Close()
	if st := s.Stats(); st.Published != 5 {
		t.Errorf("Close delivered %d of 5", st.Published)
	}
	if err := s.Publish(testEvent(t, EventNew, "c", 9, "car")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
	s.Close()
	srv.Close()

	cfg := quickWebhook("http://127.0.0.1:" + strconv.Itoa(mqtttest.FreePort(t)) + "/gone")
	cfg.FlushTimeout = 200 * time.Millisecond
	cfg.MaxAttempts = 1000
	gone, _ := NewWebhookSink(cfg)
	for i := range 3 {
		gone.Publish(testEvent(t, EventNew, "c", int64(i), "car"))
	}
	gone.Close()
	if st := gone.Stats(); st.Dropped != 3 || st.Published != 0 || st.Errors == 0 {
		t.Errorf("stats %+v, want 3 dropped", st)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	for _, u := range []string{"", "ftp://x/y", "http://", "::"} {
		if s, err := NewWebhookSink(WebhookConfig{URL: u}); err == nil {
			s.Close()
			t.Errorf("URL %q: no error", u)
		}
	}
}
