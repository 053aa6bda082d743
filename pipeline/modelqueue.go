package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/htcstream/htcstream/infer"
)

// KeyReason says why the model ran on a keyframe.
type KeyReason string

const (
	// KeyMotion: motion started on a camera that was still since its last
	// keyframe. Such a keyframe goes first in line for the model.
	KeyMotion KeyReason = "motion"
	// KeyMoving: the picture or one of the camera's tracks keeps moving.
	KeyMoving KeyReason = "moving"
	// KeyRefresh: nothing moves, but max_interval (or the camera's first
	// frame) calls for a keyframe, so new still objects are found.
	KeyRefresh KeyReason = "refresh"
	// KeyInterval: the camera's interval (no motion gating).
	KeyInterval KeyReason = "interval"
)

// modelQueue is the one line of keyframes waiting for the model, shared by
// every stream. The model takes from it when it is free, so what runs next
// is chosen at the last moment, not when a frame arrived:
//
//   - a camera whose motion just started (a KeyMotion keyframe waiting)
//     goes first: the model's next run is where the picture changed (an
//     older keyframe of the camera still waiting goes just before it: a
//     stream's keyframes keep their order);
//   - otherwise the streams take turns (round robin), each stream's
//     keyframes in capture order;
//   - no one waits for ever: a keyframe first in its stream's line that
//     other streams' runs passed over more times than there are streams
//     (a whole round of turns and a motion start) goes before even a
//     motion start;
//   - a run takes as many keyframes as the batch holds, of every stream that
//     has one waiting of the same detector and size (in the same order), so
//     cameras share a batch where batch.size > 1. A batch that is not full
//     waits for more at most batch.deadline after its first keyframe came.
//
// push never blocks (each stream's credits bound what it has waiting).
type modelQueue struct {
	cfg   infer.BatcherConfig
	key   func(item) string
	names []string // the streams', for the wait's metric
	m     *Metrics

	mu     sync.Mutex
	lines  [][]*queued // per stream, oldest first
	turn   int         // first stream asked among equals
	runs   uint64
	closed bool
	wake   chan struct{}   // something came, or the queue closed
	taken  []chan struct{} // per stream: the model took one of its keyframes
	gone   chan struct{}   // closed by abandon: the model takes nothing more
	dead   bool
}

type queued struct {
	it item
	at time.Time
	// passed counts the model runs that served other streams while this
	// was first in its stream's line.
	passed int
}

func newModelQueue(names []string, cfg infer.BatcherConfig, key func(item) string, m *Metrics) *modelQueue {
	if cfg.Size < 1 {
		cfg.Size = 1
	}
	streams := len(names)
	q := &modelQueue{cfg: cfg, key: key, names: names, m: m, lines: make([][]*queued, streams), wake: make(chan struct{}, 1),
		taken: make([]chan struct{}, streams), gone: make(chan struct{})}
	for i := range q.taken {
		q.taken[i] = make(chan struct{}, 1)
	}
	return q
}

// idle waits until stream i has no keyframe waiting; false when ctx is
// done first. A live camera whose model sees every frame picks its newest
// frame only then, so what the model takes is never older than one run.
func (q *modelQueue) idle(ctx context.Context, i int) bool {
	for {
		q.mu.Lock()
		n := len(q.lines[i])
		q.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-q.taken[i]:
		case <-q.gone:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (q *modelQueue) push(it item) {
	q.mu.Lock()
	if q.dead {
		q.mu.Unlock()
		return
	}
	q.lines[it.stream] = append(q.lines[it.stream], &queued{it: it, at: time.Now()})
	q.mu.Unlock()
	q.signal()
}

// close says no more keyframes come: what waits is still taken.
func (q *modelQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *modelQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// rank orders the lines by what waits in them from keyframe first on:
// lower goes first.
func (q *modelQueue) rank(line []*queued) int {
	if line[0].passed > len(q.lines) {
		return 0
	}
	for _, w := range line {
		if w.it.s.reason == KeyMotion {
			return 1
		}
	}
	return 2
}

// plan is the next batch: stream indices, a stream once for each of its
// keyframes taken (oldest first), without taking them.
func (q *modelQueue) plan() []int {
	n := len(q.lines)
	taken := make([]int, n)
	turn := q.turn
	var out []int
	var key string
	for len(out) < q.cfg.Size {
		best, bestRank := -1, 3
		for k := range n {
			i := (turn + k) % n
			if taken[i] >= len(q.lines[i]) {
				continue
			}
			w := q.lines[i][taken[i]]
			if len(out) > 0 && q.key(w.it) != key {
				continue
			}
			if r := q.rank(q.lines[i][taken[i]:]); r < bestRank {
				best, bestRank = i, r
			}
		}
		if best < 0 {
			break
		}
		if len(out) == 0 {
			key = q.key(q.lines[best][0].it)
		}
		out = append(out, best)
		taken[best]++
		turn = best + 1
	}
	return out
}

// take returns the next batch when there is one to run, blocking until
// then; false once the queue is closed and empty, or ctx is done.
func (q *modelQueue) take(ctx context.Context) ([]item, bool) {
	for {
		q.mu.Lock()
		p := q.plan()
		var timer *time.Timer
		var timeout <-chan time.Time
		if len(p) > 0 {
			due := q.lines[p[0]][0].at.Add(q.cfg.Deadline)
			wait := time.Until(due)
			if len(p) >= q.cfg.Size || q.closed || wait <= 0 {
				b := q.commit(p)
				q.mu.Unlock()
				return b, true
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		} else if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-timeout:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil, false
		}
	}
}

// commit takes the planned keyframes off their lines: each learns its run
// and how often it was passed over; the streams left waiting were passed
// over once more.
func (q *modelQueue) commit(p []int) []item {
	q.runs++
	now := time.Now()
	served := make([]bool, len(q.lines))
	b := make([]item, len(p))
	for k, i := range p {
		w := q.lines[i][0]
		q.lines[i] = q.lines[i][1:]
		w.it.s.run, w.it.s.waited = q.runs, w.passed
		b[k] = w.it
		served[i] = true
		q.m.modelWait(q.names[i], w.it.s.reason, now.Sub(w.at))
		select {
		case q.taken[i] <- struct{}{}:
		default:
		}
	}
	for i, l := range q.lines {
		if !served[i] && len(l) > 0 {
			l[0].passed++
		}
	}
	q.turn = (p[len(p)-1] + 1) % len(q.lines)
	return b
}

// abandon says the model has stopped: what waits is dropped, and a
// stream waiting in idle returns.
func (q *modelQueue) abandon() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.dead {
		q.dead, q.closed = true, true
		clear(q.lines)
		close(q.gone)
	}
}
