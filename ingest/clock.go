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

// timeline is a stream's clock, and the one place a frame's stream name,
// Seq and PTS are set: Seq counts every frame the Runner hands out from 0,
// never restarting, and PTS only grows, across a live source's reconnects
// and a looped file's passes alike, so either looks to consumers like a
// short gap. The decoder's own Seq and PTS (per decoder, from the media's
// timestamps) are its input.
type timeline struct {
	id      string // the stream's name, stamped on every frame
	seq     int64
	offset  time.Duration // added to the current session's PTS
	last    time.Duration // the last PTS handed out
	step    time.Duration // the last frame interval seen
	started bool          // a frame has been handed out
	fresh   bool          // the next frame opens a session
	prev    time.Duration // the session's previous raw PTS
}

func (t *timeline) newSession() { t.fresh = true }

func (t *timeline) stamp(f *decode.Frame) {
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
	if t.started && pts <= t.last {
		// A clock that jumps back or stands still (a camera or server
		// resetting its timestamps mid-session, a file with damaged or
		// repeated timestamps) must not reach consumers.
		pts = t.last + t.step
		t.offset = pts - raw
	}
	f.StreamID = t.id
	f.PTS = pts
	f.Seq = t.seq
	if f.Captured.IsZero() {
		f.Captured = time.Now()
	}
	t.seq++
	t.last = pts
	t.started = true
}
