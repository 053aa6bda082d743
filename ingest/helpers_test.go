package ingest

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// syncBuffer is a log sink that tests read while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a Runner under test: Run on its own goroutine, frames and
// state changes on channels the test reads.
type running struct {
	r      *Runner
	frames chan *decode.Frame
	events chan Event
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  bool
}

func startRunner(t *testing.T, src Source, cfg Config) *running {
	t.Helper()
	x := &running{
		frames: make(chan *decode.Frame, 4096),
		events: make(chan Event, 1024),
		logs:   &syncBuffer{},
		done:   make(chan error, 1),
	}
	cfg.Logger = slog.New(slog.NewTextHandler(x.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.OnState = func(e Event) {
		select {
		case x.events <- e:
		default:
			t.Errorf("state event dropped: %+v", e)
		}
	}
	r, err := NewRunner(src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x.r = r
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	go func() {
		x.done <- r.Run(ctx, func(f *decode.Frame) error {
			select {
			case x.frames <- f:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() { x.stop(t) })
	return x
}

// stop cancels Run and waits for it, which must be quick.
func (x *running) stop(t *testing.T) error {
	t.Helper()
	if x.ended {
		return x.err
	}
	x.cancel()
	select {
	case x.err = <-x.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context's cancel")
	}
	x.ended = true
	return x.err
}

// wait waits for Run to return on its own.
func (x *running) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case x.err = <-x.done:
		x.ended = true
		return x.err
	case <-time.After(timeout):
		t.Fatalf("Run still going after %v (state %s)", timeout, x.r.State())
		return nil
	}
}

// collect gathers frames until n arrived.
func (x *running) collect(t *testing.T, n int, timeout time.Duration) []*decode.Frame {
	t.Helper()
	var out []*decode.Frame
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case f := <-x.frames:
			out = append(out, f)
		case <-deadline:
			t.Fatalf("%d of %d frames within %v (state %s); log:\n%s", len(out), n, timeout, x.r.State(), x.logs)
		}
	}
	return out
}

// drain takes the frames waiting now.
func (x *running) drain() []*decode.Frame {
	var out []*decode.Frame
	for {
		select {
		case f := <-x.frames:
			out = append(out, f)
		default:
			return out
		}
	}
}

// waitState reads events until one in state s; it returns it and the
// events before it.
func (x *running) waitState(t *testing.T, s State, timeout time.Duration) (Event, []Event) {
	t.Helper()
	var seen []Event
	deadline := time.After(timeout)
	for {
		select {
		case e := <-x.events:
			if e.State == s {
				return e, seen
			}
			seen = append(seen, e)
		case <-deadline:
			t.Fatalf("no %s state within %v; saw %v; log:\n%s", s, timeout, states(seen), x.logs)
			return Event{}, nil
		}
	}
}

func (x *running) allEvents() []Event {
	var out []Event
	for {
		select {
		case e := <-x.events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func states(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.State.String())
	}
	return out
}

// checkSeqAndPTS checks that frames continue the numbering from first and
// that their PTS only grow.
func checkSeqAndPTS(t *testing.T, frames []*decode.Frame, first int64) {
	t.Helper()
	for i, f := range frames {
		if f.Seq != first+int64(i) {
			t.Fatalf("frame %d has seq %d, want %d", i, f.Seq, first+int64(i))
		}
		if i > 0 && f.PTS <= frames[i-1].PTS {
			t.Fatalf("frame %d (seq %d): pts %v after %v", i, f.Seq, f.PTS, frames[i-1].PTS)
		}
	}
}

// checkNoLeaks fails the test if goroutines started during it outlive it
// (after its other cleanups ran), allowing a short settle time.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
		}
	})
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

func mustNotContain(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s leaks %q: %s", what, s, text)
		}
	}
}

// closedPort is a loopback TCP port nobody listens on (a refused connect).
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	return port
}
