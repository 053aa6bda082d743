package pipeline

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/htcstream/htcstream/infer"
)

// sleepySink takes a second over every frame: a disk or a viewer far
// slower than the camera.
type sleepySink struct {
	recordSink
	delay time.Duration
}

func (s *sleepySink) Write(o *Output) error {
	time.Sleep(s.delay)
	return s.recordSink.Write(o)
}

func (s *sleepySink) SinkName() string { return "sleepy" }

// arrivals records when each frame reached a sink.
type arrivals struct {
	recordSink
	mu sync.Mutex
	at []time.Time
}

func (a *arrivals) Write(o *Output) error {
	a.mu.Lock()
	a.at = append(a.at, time.Now())
	a.mu.Unlock()
	return a.recordSink.Write(o)
}

// rate is frames per second between the first and the last arrival.
func (a *arrivals) rate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.at) < 2 {
		return 0
	}
	return float64(len(a.at)-1) / a.at[len(a.at)-1].Sub(a.at[0]).Seconds()
}

// TestSlowSinkSlowsNoOtherSink: a sink that sleeps 1 s a frame on one live
// camera lowers neither the other camera's frame rate nor its own camera's
// detections sink; it drops its oldest frames instead, and says so.
func TestSlowSinkSlowsNoOtherSink(t *testing.T) {
	const n, every = 40, 10 * time.Millisecond // 100 fps cameras, 0.4 s
	slow := &sleepySink{delay: time.Second}
	own, other := &arrivals{}, &arrivals{}
	var drops atomic.Int64
	start := time.Now()
	err := Run(context.Background(), context.Background(), Config{
		Sources: []Source{
			&seqSource{name: "a", live: true, n: n, interval: every, w: 8, h: 8},
			&seqSource{name: "b", live: true, n: n, interval: every, w: 8, h: 8},
		},
		Detector: &pixelDetector{},
		Sinks: func(stream string) ([]Sink, error) {
			if stream == "a" {
				return []Sink{slow, own}, nil
			}
			return []Sink{other}, nil
		},
		SinkQueue: 2,
		OnSinkDrop: func(stream, sink string) {
			if stream != "a" || sink != "sleepy" {
				t.Errorf("drop reported for %s/%s", stream, sink)
			}
			drops.Add(1)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Both cameras' fast sinks see (nearly) every frame at the camera's
	// pace; a sink held up by the slow one would see one frame a second.
	for name, a := range map[string]*arrivals{"a's own detections sink": own, "b": other} {
		if len(a.seqs) < n*3/4 || a.rate() < 40 {
			t.Errorf("%s: %d of %d frames at %.0f fps", name, len(a.seqs), n, a.rate())
		}
	}
	// The slow sink kept the newest frames: it wrote the one it held, then
	// its queue of 2, and everything else was dropped and counted.
	if got := len(slow.seqs); got > 4 || int64(got)+drops.Load() < int64(len(own.seqs)) {
		t.Errorf("slow sink wrote %d, %d drops, of %d frames", got, drops.Load(), len(own.seqs))
	}
	if last := slow.seqs[len(slow.seqs)-1]; last < int64(n)-3 {
		t.Errorf("slow sink's last frame %d: the newest frames must win", last)
	}
	if slow.closed != 1 || own.closed != 1 || other.closed != 1 {
		t.Errorf("closed %d/%d/%d times", slow.closed, own.closed, other.closed)
	}
	t.Logf("run %.1f s; fast sinks %.0f and %.0f fps; slow sink wrote %d, dropped %d",
		time.Since(start).Seconds(), own.rate(), other.rate(), len(slow.seqs), drops.Load())
}

// TestSlowFileSinkHoldsOnlyItsOwnStream: a file stream loses nothing, so a
// slow sink holds up its own source, but another file stream runs on at
// full speed and ends long before.
func TestSlowFileSinkHoldsOnlyItsOwnStream(t *testing.T) {
	slow := &sleepySink{delay: 50 * time.Millisecond}
	other := &arrivals{}
	var otherDone time.Duration
	start := time.Now()
	err := Run(context.Background(), context.Background(), Config{
		Sources: []Source{
			&seqSource{name: "a", n: 20, w: 8, h: 8},
			&seqSource{name: "b", n: 200, w: 8, h: 8},
		},
		Detector: &pixelDetector{},
		Batch:    infer.BatcherConfig{Size: 1},
		Sinks: func(stream string) ([]Sink, error) {
			if stream == "a" {
				return []Sink{slow}, nil
			}
			return []Sink{&doneAt{arrivals: other, n: 200, start: start, at: &otherDone}}, nil
		},
		SinkQueue: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	if len(slow.seqs) != 20 || len(other.seqs) != 200 {
		t.Fatalf("a wrote %d of 20, b %d of 200", len(slow.seqs), len(other.seqs))
	}
	for i, q := range slow.seqs {
		if q != int64(i) {
			t.Fatalf("a's frame %d is %d", i, q)
		}
	}
	// a needs 20 x 50 ms = 1 s; b's 200 frames must not wait for it.
	if otherDone > total/2 {
		t.Errorf("b finished after %v of %v: held up by a's slow sink", otherDone, total)
	}
}

type doneAt struct {
	*arrivals
	n     int
	start time.Time
	at    *time.Duration
}

func (d *doneAt) Write(o *Output) error {
	if err := d.arrivals.Write(o); err != nil {
		return err
	}
	if len(d.seqs) == d.n {
		*d.at = time.Since(d.start)
	}
	return nil
}
