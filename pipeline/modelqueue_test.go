package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
)

func queueItem(stream int, why KeyReason, w, h int) item {
	return item{stream, &slot{model: &decode.Frame{Width: w, Height: h}, key: true, reason: why}}
}

func sizeKey(it item) string { return fmt.Sprintf("%dx%d", it.s.model.Width, it.s.model.Height) }

// takeStreams runs the queue n times and says whose keyframes each run took.
func takeStreams(t *testing.T, q *modelQueue, n int) [][]int {
	t.Helper()
	var runs [][]int
	for range n {
		b, ok := q.take(context.Background())
		if !ok {
			t.Fatal("the queue ended early")
		}
		var r []int
		for _, it := range b {
			r = append(r, it.stream)
		}
		runs = append(runs, r)
	}
	return runs
}

// Three cameras with a keyframe each always waiting take turns; a camera
// whose motion starts takes the next run, then the turns go on.
func TestModelQueueMotionGoesFirstThenTurns(t *testing.T) {
	q := newModelQueue([]string{"a", "b", "c"}, infer.BatcherConfig{Size: 1}, sizeKey, nil)
	for range 4 {
		q.push(queueItem(0, KeyInterval, 320, 240))
		q.push(queueItem(1, KeyInterval, 320, 240))
	}
	got := takeStreams(t, q, 3)
	if want := [][]int{{0}, {1}, {0}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	q.push(queueItem(2, KeyRefresh, 320, 240))
	q.push(queueItem(2, KeyMotion, 320, 240))
	// the camera whose motion started takes the next two runs: the
	// refresh waiting ahead of the motion start first (a camera's
	// keyframes keep their order); then the turns go on
	got = takeStreams(t, q, 4)
	if want := [][]int{{2}, {2}, {0}, {1}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	q.push(queueItem(2, KeyMotion, 320, 240))
	b, _ := q.take(context.Background())
	if b[0].stream != 2 || b[0].s.waited != 0 {
		t.Fatalf("motion start: run went to stream %d, it waited %d runs", b[0].stream, b[0].s.waited)
	}
}

// Motion starting over and over on two cameras never starves a third: a
// keyframe passed over more times than there are cameras goes next.
func TestModelQueueNeverStarves(t *testing.T) {
	q := newModelQueue([]string{"a", "b", "c"}, infer.BatcherConfig{Size: 1}, sizeKey, nil)
	q.push(queueItem(0, KeyInterval, 320, 240))
	for range 20 {
		q.push(queueItem(1, KeyMotion, 320, 240))
		q.push(queueItem(2, KeyMotion, 320, 240))
	}
	for run := range 40 {
		b, _ := q.take(context.Background())
		if b[0].stream == 0 {
			if b[0].s.waited > 4 || run > 4 {
				t.Fatalf("stream 0 ran at run %d after %d passes", run, b[0].s.waited)
			}
			return
		}
	}
	t.Fatal("stream 0 never ran")
}

// A run takes a keyframe of every camera that has one of the same size
// waiting, up to the batch size; other sizes wait for a run of their own.
func TestModelQueueBatchesAcrossCameras(t *testing.T) {
	q := newModelQueue([]string{"a", "b", "c"}, infer.BatcherConfig{Size: 2, Deadline: time.Hour}, sizeKey, nil)
	q.push(queueItem(0, KeyInterval, 320, 240))
	q.push(queueItem(1, KeyInterval, 640, 480))
	q.push(queueItem(2, KeyInterval, 320, 240))
	got := takeStreams(t, q, 1)
	if want := [][]int{{0, 2}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	// alone and not full: it waits for the deadline, or the end
	q.close()
	got = takeStreams(t, q, 1)
	if want := [][]int{{1}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("runs %v, want %v", got, want)
	}
	if _, ok := q.take(context.Background()); ok {
		t.Fatal("a closed, empty queue gave a batch")
	}
}

type failDetector struct{}

func (failDetector) Detect([]cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	time.Sleep(20 * time.Millisecond) // a model run that fails after a while
	return nil, cascade.Timings{}, errors.New("out of memory")
}

type countSink struct{ n int }

func (c *countSink) Write(*Output) error { c.n++; return nil }
func (c *countSink) Close() error        { return nil }

// A live camera whose model sees every frame hands over its newest frame
// only once the model took the last: when the model fails, nothing will
// take it, and the run must still end with the model's error, not wait
// for a hard stop.
func TestLiveModelFailureEndsTheRun(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), context.Background(), Config{
			Sources:  []Source{&seqSource{name: "cam", live: true, n: 30, interval: 2 * time.Millisecond, w: 8, h: 8}},
			Detector: failDetector{},
			Sinks:    func(string) ([]Sink, error) { return []Sink{&countSink{}}, nil },
		})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "out of memory") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the model failed on a live camera (the camera waited for the model to take its frame)")
	}
}
