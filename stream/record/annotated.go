package record

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/htcstream/htcstream/stream/encode"
)

// annotated is a Recorder's segment of drawn frames (mode annotated): the
// frames as the overlay drew them, H.264-encoded into the same fragmented
// MP4 segments, names and retention as the camera's own packets get.
type annotated struct {
	mu    sync.Mutex
	sink  *encode.FileSink
	seg   Segment
	first time.Duration // the segment's first pts
	n     int
	// onWritten hears of each frame whose packet is in a segment
	onWritten func(pts time.Duration)
}

// OnWritten sets a function called with a drawn frame's pts (as given to
// WriteFrame) once its encoded packet is in a segment: the encoder looks
// ahead, so that is some frames after WriteFrame, and the last frames of a
// segment come out when it closes (at the next segment's first frame, or
// at Close). Set it before the first WriteFrame.
func (r *Recorder) OnWritten(f func(pts time.Duration)) {
	r.ann.mu.Lock()
	defer r.ann.mu.Unlock()
	r.ann.onWritten = f
}

// WriteFrame records one drawn w x h RGB frame at pts (mode annotated, on
// the camera's sink goroutine): a segment ends at the first frame
// cfg.Segment after its start, and the next begins with a keyframe, as a
// new encoder's first frame is.
func (r *Recorder) WriteFrame(w, h int, rgb []byte, pts time.Duration) error {
	a := &r.ann
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sink != nil && pts-a.first >= r.cfg.Segment {
		r.closeAnnotated()
	}
	if a.sink == nil {
		start := time.Now()
		path := SegmentPath(r.cfg.Dir, r.cfg.Camera, start)
		// a keyframe, so a fragment, every second: the segment being
		// written plays up to a second ago
		s, err := encode.NewSegmentFile(path, encode.EncoderConfig{GOP: time.Second})
		if err != nil {
			return fmt.Errorf("record %s: %w", r.cfg.Camera, err)
		}
		if f := a.onWritten; f != nil {
			first := pts
			s.OnWritten(func(p time.Duration) { f(p + first) })
		}
		a.sink, a.first, a.n = s, pts, 0
		a.seg = Segment{Camera: r.cfg.Camera, Path: path, Start: start}
		r.retain(path)
		r.announce(a.seg, false)
	}
	if err := a.sink.WriteFrame(w, h, rgb, pts-a.first); err != nil {
		r.dropped.Add(1)
		return err
	}
	r.packets.Add(1)
	a.n++
	a.seg.Duration = pts - a.first
	if a.n%128 == 0 {
		r.retain(a.seg.Path)
		r.announce(a.seg, false)
	}
	return nil
}

// closeAnnotated ends the drawn segment in progress; r.ann.mu is held.
func (r *Recorder) closeAnnotated() {
	a := &r.ann
	if a.sink == nil {
		return
	}
	err := a.sink.Close()
	a.sink = nil
	if err != nil && !errors.Is(err, encode.ErrNoFrames) {
		r.cfg.Logger.Error("record: close segment", "camera", r.cfg.Camera, "file", a.seg.Path, "err", err)
	}
	r.announce(a.seg, true)
}
