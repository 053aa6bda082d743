package pipeline

import (
	"context"
	"fmt"
)

// defaultSinkQueue is a sink's queue length when Config.SinkQueue is 0:
// enough to ride out an encoder's or a disk's hiccup of a few frames.
const defaultSinkQueue = 8

// NamedSink is a sink that says what it is in logs and metrics ("video",
// "detections", "webrtc"...).
type NamedSink interface {
	SinkName() string
}

// sinkQueue runs one sink on a goroutine of its own behind a bounded queue,
// so a slow sink (a disk, an encoder, a network peer) never holds up the
// stream's other sinks or inference.
type sinkQueue struct {
	sink Sink
	name string
	ch   chan *Output
	done chan struct{}
	err  error // set before done closes
}

func newSinkQueue(s Sink, index, size int) *sinkQueue {
	if size <= 0 {
		size = defaultSinkQueue
	}
	name := fmt.Sprintf("sink%d", index)
	if n, ok := s.(NamedSink); ok {
		name = n.SinkName()
	}
	return &sinkQueue{sink: s, name: name, ch: make(chan *Output, size), done: make(chan struct{})}
}

// run writes every queued output until the queue is closed. After the
// first failure the sink is skipped (its error is kept); on a hard stop the
// rest of the queue is discarded.
func (q *sinkQueue) run(ctx context.Context) {
	defer close(q.done)
	for o := range q.ch {
		if q.err != nil || ctx.Err() != nil {
			continue
		}
		if err := q.sink.Write(o); err != nil {
			q.err = fmt.Errorf("%s: frame %d: %w", q.name, o.Frame.Seq, err)
		}
	}
}

// put queues o, waiting while the queue is full (file streams: nothing is
// skipped) unless ctx ends first.
func (q *sinkQueue) put(ctx context.Context, o *Output) {
	select {
	case q.ch <- o:
	case <-ctx.Done():
	}
}

// offer queues o without waiting (live streams): when the queue is full the
// oldest queued output makes room, and offer reports that one was dropped.
// The stream's output goroutine is the only sender, so the room made is
// still there when o is sent.
func (q *sinkQueue) offer(o *Output) (dropped bool) {
	select {
	case q.ch <- o:
		return false
	default:
	}
	select {
	case <-q.ch:
		dropped = true
	default:
		// the sink took one meanwhile
	}
	q.ch <- o
	return dropped
}
