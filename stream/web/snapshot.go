package web

import (
	"bytes"
	"errors"
	"fmt"
	"image/jpeg"
	"sync"

	"github.com/htcstream/htcstream/stream/encode"
)

var (
	// ErrNoStream: the hub has no stream of that name.
	ErrNoStream = errors.New("stream: no such stream")
	// ErrNoFrame: the stream has published no frame yet.
	ErrNoFrame = errors.New("stream: no frame yet")
)

// SnapshotQuality is the JPEG quality of LatestJPEG.
const SnapshotQuality = 85

// LatestJPEG returns the stream's latest published frame as JPEG. The
// frame is encoded here, on the first call after it was published (later
// calls for the same frame get the same bytes), never on Publish's path.
func (h *Hub) LatestJPEG(id string) ([]byte, error) {
	s := h.stream(id)
	if s == nil {
		return nil, fmt.Errorf("snapshot of %q: %w (GET /streams lists them)", id, ErrNoStream)
	}
	b, err := s.latest.jpeg()
	if err != nil {
		return nil, fmt.Errorf("snapshot of %q: %w", id, err)
	}
	return b, nil
}

// latestFrame keeps a copy of a stream's last frame for snapshots.
type latestFrame struct {
	mu      sync.Mutex
	w, h    int
	rgb     []byte // packed RGB24, reused from frame to frame
	seq     int64
	has     bool
	enc     []byte // JPEG of frame encSeq
	encSeq  int64
	encoded bool
}

// keep copies a published frame (Publish does not retain rgb).
func (l *latestFrame) keep(seq int64, w, h int, rgb []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rgb = append(l.rgb[:0], rgb...)
	l.w, l.h, l.seq, l.has = w, h, seq, true
}

func (l *latestFrame) jpeg() ([]byte, error) {
	l.mu.Lock()
	if !l.has {
		l.mu.Unlock()
		return nil, ErrNoFrame
	}
	if l.encoded && l.encSeq == l.seq {
		b := l.enc
		l.mu.Unlock()
		return b, nil
	}
	// Copy out under the lock, encode without it: Publish keeps going.
	img := encode.RGBImage(l.w, l.h, l.rgb)
	seq := l.seq
	l.mu.Unlock()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: SnapshotQuality}); err != nil {
		return nil, fmt.Errorf("jpeg: %w", err)
	}
	l.mu.Lock()
	if !l.encoded || seq >= l.encSeq {
		l.enc, l.encSeq, l.encoded = buf.Bytes(), seq, true
	}
	l.mu.Unlock()
	return buf.Bytes(), nil
}
