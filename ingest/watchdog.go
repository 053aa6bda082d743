package ingest

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// watchdog interrupts a decoder whose input went quiet: no packet read for
// the timeout while the runner waits in Next. It counts packets, not
// pictures, so a camera's long wait for its next keyframe is no stall, and
// the consumer's time with a frame does not count either. A nil watchdog
// does nothing.
type watchdog struct {
	d       *decode.Decoder
	timeout time.Duration
	waiting atomic.Int64 // when the current Next began (unix ns); 0 outside Next
	stalled atomic.Bool

	mu      sync.Mutex // the timer's runs may overlap by a hair
	timer   *time.Timer
	stopped bool
	packets int64
	moved   time.Time // when the packet count last changed, as seen
}

func startWatchdog(d *decode.Decoder, timeout time.Duration) *watchdog {
	w := &watchdog{d: d, timeout: timeout, moved: time.Now()}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(w.period(), w.check)
	return w
}

// period is how often the watchdog looks: a stall is seen within 1.25
// timeouts.
func (w *watchdog) period() time.Duration { return max(w.timeout/4, time.Millisecond) }

func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := time.Now()
	if p := w.d.Packets(); p != w.packets {
		w.packets, w.moved = p, now
	}
	if began := w.waiting.Load(); began != 0 {
		since := w.moved
		if b := time.Unix(0, began); b.After(since) {
			since = b
		}
		if now.Sub(since) >= w.timeout {
			w.stalled.Store(true)
			w.d.Interrupt()
			return
		}
	}
	w.timer.Reset(w.period())
}

func (w *watchdog) enter() {
	if w != nil {
		w.waiting.Store(time.Now().UnixNano())
	}
}

func (w *watchdog) leave() {
	if w != nil {
		w.waiting.Store(0)
	}
}

func (w *watchdog) fired() bool { return w != nil && w.stalled.Load() }

// stop ends the watchdog for good; a check already running sees it.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}
