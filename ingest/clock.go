package ingest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// frameInterval parses a frame rate ("25", "29.97", "30000/1001").
func frameInterval(rate string) (time.Duration, error) {
	num, den := rate, "1"
	if i := strings.IndexByte(rate, '/'); i >= 0 {
		num, den = rate[:i], rate[i+1:]
	}
	n, err1 := strconv.ParseFloat(num, 64)
	d, err2 := strconv.ParseFloat(den, 64)
	if err1 != nil || err2 != nil || n <= 0 || d <= 0 || n/d > 1000 || n/d < 1e-3 {
		return 0, fmt.Errorf("frame rate %q: want a positive rate such as 25 or 30000/1001", rate)
	}
	return time.Duration(float64(time.Second) * d / n), nil
}

// timeline renumbers frames across sessions: Seq never restarts and PTS
// never goes back, so a reconnect looks to consumers like a short gap.
type timeline struct {
	seq     int64
	offset  time.Duration // added to the current session's PTS
	last    time.Duration // the last PTS handed out
	step    time.Duration // the last frame interval seen
	started bool          // a frame has been handed out
	fresh   bool          // the next frame opens a session
	prev    time.Duration // the session's previous raw PTS
}

func (t *timeline) newSession() { t.fresh = true }

func (t *timeline) stamp(f *decode.Frame, live bool) {
	raw := f.PTS
	switch {
	case t.fresh && t.started:
		// A new session restarts its clock: continue one frame after the
		// last picture.
		t.offset = t.last + t.step - raw
	case !t.fresh:
		if dt := raw - t.prev; dt > 0 && dt < time.Second {
			t.step = dt
		}
	}
	t.fresh = false
	t.prev = raw
	pts := raw + t.offset
	if live && t.started && pts <= t.last {
		// A live clock that jumps back (a camera or server resetting its
		// timestamps mid-session) must not reach consumers.
		pts = t.last + t.step
		t.offset = pts - raw
	}
	f.PTS = pts
	f.Seq = t.seq
	t.seq++
	t.last = pts
	t.started = true
}
