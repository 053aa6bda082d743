package pipeline

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/infer"
)

// seqSource emits n tiny frames whose first pixel byte carries the frame's
// sequence number, at a given interval.
type seqSource struct {
	name     string
	live     bool
	n        int
	interval time.Duration
	w, h     int
	fail     error
}

func (s *seqSource) Name() string { return s.name }
func (s *seqSource) Live() bool   { return s.live }
func (s *seqSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	for i := 0; i < s.n; i++ {
		if s.fail != nil && i == s.n/2 {
			return s.fail
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rgb := make([]byte, s.w*s.h*3)
		rgb[0] = byte(i)
		if !emit(&decode.Frame{StreamID: s.name, Seq: int64(i), Width: s.w, Height: s.h, RGB: rgb, Captured: time.Now()}) {
			return nil
		}
		if s.interval > 0 {
			time.Sleep(s.interval)
		}
	}
	return nil
}

// pixelDetector "detects" one instance per frame whose score encodes the
// frame's first pixel, taking delay per batch: enough to check routing,
// ordering and backpressure without a model.
type pixelDetector struct {
	delay   time.Duration
	mu      sync.Mutex
	batches []int
}

func (d *pixelDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	time.Sleep(d.delay)
	d.mu.Lock()
	d.batches = append(d.batches, len(frames))
	d.mu.Unlock()
	out := make([]cascade.Result, len(frames))
	for i, f := range frames {
		out[i] = cascade.Result{Width: f.Width, Height: f.Height,
			Detections: []detection.Detection{{Score: float32(f.Pix[0]), Box: detection.Box{X2: 1, Y2: 1}}}}
	}
	return out, cascade.Timings{}, nil
}

// recordSink keeps the sequence numbers and scores it saw.
type recordSink struct {
	mu     sync.Mutex
	seqs   []int64
	scores []float32
	closed int
	failAt int64
}

func (r *recordSink) Write(o *Output) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAt > 0 && o.Frame.Seq == r.failAt {
		return errors.New("disk full")
	}
	r.seqs = append(r.seqs, o.Frame.Seq)
	r.scores = append(r.scores, o.Result.Detections[0].Score)
	return nil
}

func (r *recordSink) Close() error {
	r.mu.Lock()
	r.closed++
	r.mu.Unlock()
	return nil
}

func sinksFor(m map[string]*recordSink) func(string) ([]Sink, error) {
	var mu sync.Mutex
	return func(stream string) ([]Sink, error) {
		mu.Lock()
		defer mu.Unlock()
		s := &recordSink{}
		m[stream] = s
		return []Sink{s}, nil
	}
}

func TestFilesLoseNothingAndKeepOrder(t *testing.T) {
	before := runtime.NumGoroutine()
	sinks := map[string]*recordSink{}
	det := &pixelDetector{delay: time.Millisecond}
	met := NewMetrics("cpu")
	err := Run(context.Background(), context.Background(), Config{
		Sources:  []Source{&seqSource{name: "a", n: 40, w: 8, h: 8}, &seqSource{name: "b", n: 25, w: 16, h: 8}},
		Detector: det,
		Sinks:    sinksFor(sinks),
		Batch:    infer.BatcherConfig{Size: 4, Deadline: 5 * time.Millisecond},
		Metrics:  met,
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range map[string]int{"a": 40, "b": 25} {
		s := sinks[name]
		if len(s.seqs) != n || s.closed != 1 {
			t.Fatalf("stream %s: %d frames, closed %d times", name, len(s.seqs), s.closed)
		}
		for i, q := range s.seqs {
			if q != int64(i) || s.scores[i] != float32(byte(i)) {
				t.Fatalf("stream %s: output %d is frame %d with score %v", name, i, q, s.scores[i])
			}
		}
		if in, out, dropped := met.Snapshot(name); in != uint64(n) || out != uint64(n) || dropped != 0 {
			t.Fatalf("stream %s metrics: in %d out %d dropped %d", name, in, out, dropped)
		}
	}
	// Frames of different sizes never share a batch, and batches filled.
	big := 0
	for _, b := range det.batches {
		if b > 4 {
			t.Fatalf("batch of %d", b)
		}
		if b > 1 {
			big++
		}
	}
	if big == 0 {
		t.Fatalf("no batch held more than one frame: %v", det.batches)
	}
	checkGoroutines(t, before)
}

func TestLiveSourceDropsOldFramesNotLatency(t *testing.T) {
	sinks := map[string]*recordSink{}
	met := NewMetrics("cpu")
	// 60 frames at 2 ms against a 20 ms model: most must be dropped, and
	// the frames that get through keep their order.
	err := Run(context.Background(), context.Background(), Config{
		Sources:  []Source{&seqSource{name: "cam", live: true, n: 60, interval: 2 * time.Millisecond, w: 8, h: 8}},
		Detector: &pixelDetector{delay: 20 * time.Millisecond},
		Sinks:    sinksFor(sinks),
		Metrics:  met,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := sinks["cam"]
	in, out, dropped := met.Snapshot("cam")
	if in != 60 || dropped == 0 || out+dropped != in || int(out) != len(s.seqs) {
		t.Fatalf("in %d out %d dropped %d, sink saw %d", in, out, dropped, len(s.seqs))
	}
	for i := 1; i < len(s.seqs); i++ {
		if s.seqs[i] <= s.seqs[i-1] {
			t.Fatalf("out of order: %v", s.seqs)
		}
	}
	if s.seqs[len(s.seqs)-1] != 59 {
		t.Fatalf("the newest frame must get through, last was %d", s.seqs[len(s.seqs)-1])
	}
}

func TestOneFailingStreamDoesNotStopTheOthers(t *testing.T) {
	sinks := map[string]*recordSink{}
	err := Run(context.Background(), context.Background(), Config{
		Sources: []Source{
			&seqSource{name: "bad", n: 10, w: 8, h: 8, fail: errors.New("connection reset")},
			&seqSource{name: "good", n: 30, w: 8, h: 8, interval: time.Millisecond},
		},
		Detector: &pixelDetector{},
		Sinks:    sinksFor(sinks),
	})
	var se *StreamError
	if !errors.As(err, &se) || se.Stream != "bad" || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("got %v, want the bad stream's error", err)
	}
	if len(sinks["good"].seqs) != 30 || len(sinks["bad"].seqs) != 5 {
		t.Fatalf("good got %d frames, bad %d", len(sinks["good"].seqs), len(sinks["bad"].seqs))
	}
}

func TestDrainDeliversInFlightFramesAndClosesSinks(t *testing.T) {
	before := runtime.NumGoroutine()
	sinks := map[string]*recordSink{}
	drain, stop := context.WithCancel(context.Background())
	det := &pixelDetector{delay: 5 * time.Millisecond}
	met := NewMetrics("cpu")
	go func() {
		time.Sleep(60 * time.Millisecond)
		stop()
	}()
	err := Run(drain, context.Background(), Config{
		Sources:  []Source{&seqSource{name: "f", n: 100000, w: 8, h: 8}},
		Detector: det,
		Sinks:    sinksFor(sinks),
		Metrics:  met,
	})
	if err != nil {
		t.Fatal(err)
	}
	in, out, _ := met.Snapshot("f")
	s := sinks["f"]
	if in == 0 || in >= 100000 || out != in || s.closed != 1 {
		t.Fatalf("drain: in %d out %d, closed %d", in, out, s.closed)
	}
	checkGoroutines(t, before)
}

func TestHardStopAbandonsButStillCloses(t *testing.T) {
	sinks := map[string]*recordSink{}
	hard, stop := context.WithCancel(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		stop()
	}()
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), hard, Config{
			Sources:  []Source{&seqSource{name: "f", n: 100000, w: 8, h: 8}},
			Detector: &pixelDetector{delay: 20 * time.Millisecond},
			Sinks:    sinksFor(sinks),
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a hard stop did not end the run")
	}
	if sinks["f"].closed != 1 {
		t.Fatalf("sink closed %d times", sinks["f"].closed)
	}
}

func TestFailingSinkIsReportedOthersContinue(t *testing.T) {
	bad := &recordSink{failAt: 3}
	good := &recordSink{}
	err := Run(context.Background(), context.Background(), Config{
		Sources:  []Source{&seqSource{name: "s", n: 10, w: 8, h: 8}},
		Detector: &pixelDetector{},
		Sinks:    func(string) ([]Sink, error) { return []Sink{bad, good}, nil },
	})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("got %v", err)
	}
	if len(good.seqs) != 10 || len(bad.seqs) != 3 || bad.closed != 1 || good.closed != 1 {
		t.Fatalf("good %d, bad %d frames; closed %d %d", len(good.seqs), len(bad.seqs), bad.closed, good.closed)
	}
}

func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before+1 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
