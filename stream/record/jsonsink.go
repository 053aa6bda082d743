package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/stream/encode"
)

// ErrClosed is returned (wrapped) by Write after Close.
var ErrClosed = errors.New("stream: closed")

// Region is a stuff class of the semantic branch's map (sky, road, grass...)
// and the share of the frame's pixels it labels.
type Region struct {
	Label string
	// ClassID is the semantic channel (the manifest's semantic classes).
	ClassID int
	// Area is the fraction of the frame, 0..1.
	Area float32
}

// FrameDetections is what one frame produced.
type FrameDetections struct {
	Stream string
	Seq    int64
	PTS    time.Duration
	// Time is when the frame was captured, by the wall clock (the line's
	// "time", RFC 3339 in UTC with milliseconds); zero leaves it out.
	Time time.Time
	// File names the picture's file for an image folder's frames (the
	// line's "file"); empty for video, and left out.
	File string
	// Width and Height are the frame's size, the size of every mask's RLE.
	Width, Height int
	// Keyframe says the model ran on this frame (the line's "keyframe");
	// the other frames' detections were carried there by the tracker.
	Keyframe bool
	// Model says, on a keyframe, why the model ran and which run it was
	// (the line's "model"); nil on the other frames.
	Model      *ModelRun
	Detections []detection.Detection
	// Stuff lists the stuff regions of the frame's semantic map, largest
	// first; nil when no map was made (the line then has no "stuff").
	Stuff []Region
}

// timeFormat is RFC 3339 with milliseconds, always three digits so the
// times of a file sort as text.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

// jsonLine is one line of the file. The field names are the file format:
// change them only with the docs.
type jsonLine struct {
	Stream     string          `json:"stream"`
	Seq        int64           `json:"seq"`
	PTSms      float64         `json:"pts_ms"`
	Time       string          `json:"time,omitempty"`
	File       string          `json:"file,omitempty"`
	Width      int             `json:"width"`
	Height     int             `json:"height"`
	Keyframe   bool            `json:"keyframe"`
	Model      *ModelRun       `json:"model,omitempty"`
	Detections []jsonDetection `json:"detections"`
	Stuff      *[]jsonRegion   `json:"stuff,omitempty"`
}

// ModelRun is a keyframe's line "model": why the model ran on it
// ("motion", "moving", "refresh", "interval"), and, once its result is in
// when the line is written, the run's number in the process (from 1; the
// keyframes of several cameras batched together share it) and how many
// runs went to other cameras while it was first in its camera's line.
type ModelRun struct {
	Why    string `json:"why"`
	Run    uint64 `json:"run,omitempty"`
	Waited *int   `json:"waited,omitempty"`
}

type jsonRegion struct {
	Label   string  `json:"label"`
	ClassID int     `json:"class_id"`
	Area    float32 `json:"area"`
}

type jsonDetection struct {
	Box         [4]float32 `json:"box"`
	Score       float32    `json:"score"`
	Label       string     `json:"label"`
	ClassID     int        `json:"class_id"`
	StageScores []float32  `json:"stage_scores"`
	// Mask is COCO's {"size":[h,w],"counts":"<compressed RLE>"} over the
	// whole frame, as pycocotools' encode writes it; absent without a mask.
	Mask *coco.RLE `json:"mask,omitempty"`
	// TrackID is the confirmed track's id; absent without one.
	TrackID uint64 `json:"track_id,omitempty"`
	// Propagated is present, true, only on an instance a tracker carried to
	// a frame the model did not see.
	Propagated bool `json:"propagated,omitempty"`
}

// JSONSink writes detections as JSON lines, one line a frame, each line
// written to the file with a single write as soon as it is made: a run that
// is interrupted, even killed, keeps every line written before. Write and
// Close may be called from different goroutines (Close from a signal
// handler's goroutine, as the pipeline does on SIGINT).
type JSONSink struct {
	mu     sync.Mutex
	path   string
	f      *os.File
	off    int64 // end of the last complete line
	closed bool
	stdout bool // "-": lines go to standard output, a pipe perhaps

	line bytes.Buffer
	enc  *json.Encoder
	dets []jsonDetection
	rles []coco.RLE
}

// NewJSONSink creates (or truncates) the file at path; "-" writes to
// standard output instead, which is neither truncated, synced nor closed.
func NewJSONSink(path string) (*JSONSink, error) {
	if path == "-" {
		s := &JSONSink{path: "standard output", f: os.Stdout, stdout: true}
		s.enc = json.NewEncoder(&s.line)
		s.enc.SetEscapeHTML(false)
		return s, nil
	}
	if err := encode.CheckDir(path); err != nil {
		return nil, fmt.Errorf("detections sink %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("detections sink: %w", err)
	}
	s := &JSONSink{path: path, f: f}
	s.enc = json.NewEncoder(&s.line)
	s.enc.SetEscapeHTML(false)
	return s, nil
}

// Path is the file's name.
func (s *JSONSink) Path() string { return s.path }

// Write appends the line of one frame. A frame that cannot be written
// (a mask whose Bits do not match its size, a NaN score) is an error and
// leaves the file as it was.
func (s *JSONSink) Write(fd FrameDetections) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("detections sink %s: %w", s.path, ErrClosed)
	}
	if err := s.format(fd); err != nil {
		return fmt.Errorf("detections sink %s: frame %d: %w", s.path, fd.Seq, err)
	}
	n, err := s.f.Write(s.line.Bytes())
	if err != nil {
		// Cut a partial line off so the file stays valid JSON lines and
		// later lines do not run into it.
		if n > 0 && !s.stdout {
			if terr := s.f.Truncate(s.off); terr == nil {
				s.f.Seek(s.off, io.SeekStart)
			}
		}
		return fmt.Errorf("detections sink %s: %w", s.path, err)
	}
	s.off += int64(n)
	return nil
}

// format renders fd as one line (with its newline) into s.line.
func (s *JSONSink) format(fd FrameDetections) error {
	s.line.Reset()
	s.dets = s.dets[:0]
	// Room for every mask up front: s.rles never reallocates below, so the
	// pointers the detections take into it stay valid.
	s.rles = slices.Grow(s.rles[:0], len(fd.Detections))
	for i, d := range fd.Detections {
		if err := checkFinite(&d); err != nil {
			return fmt.Errorf("detection %d: %w", i, err)
		}
		jd := jsonDetection{Box: d.Box.XYXY(), Score: d.Score, Label: d.Class, ClassID: d.Label, StageScores: d.StageScores,
			TrackID: d.TrackID, Propagated: d.Propagated}
		if jd.StageScores == nil {
			jd.StageScores = []float32{}
		}
		if m := d.Mask; !m.Empty() {
			r, err := coco.EncodeRegion(m.X, m.Y, m.W, m.H, m.Bits, fd.Width, fd.Height)
			if err != nil {
				return fmt.Errorf("detection %d: %w", i, err)
			}
			s.rles = append(s.rles, r)
			jd.Mask = &s.rles[len(s.rles)-1]
		}
		s.dets = append(s.dets, jd)
	}
	dets := s.dets
	if dets == nil {
		dets = []jsonDetection{}
	}
	line := jsonLine{
		Stream: fd.Stream, Seq: fd.Seq, PTSms: float64(fd.PTS) / float64(time.Millisecond),
		File: fd.File, Width: fd.Width, Height: fd.Height, Keyframe: fd.Keyframe, Model: fd.Model, Detections: dets,
	}
	if !fd.Time.IsZero() {
		line.Time = fd.Time.UTC().Format(timeFormat)
	}
	if fd.Stuff != nil {
		regions := make([]jsonRegion, len(fd.Stuff))
		for i, r := range fd.Stuff {
			if math.IsNaN(float64(r.Area)) || r.Area < 0 || r.Area > 1 {
				return fmt.Errorf("stuff region %q: area %v outside 0..1", r.Label, r.Area)
			}
			regions[i] = jsonRegion(r)
		}
		line.Stuff = &regions
	}
	return s.enc.Encode(line)
}

// checkFinite rejects the NaN and infinite numbers JSON cannot carry,
// with a message that says which.
func checkFinite(d *detection.Detection) error {
	for i, v := range d.Box.XYXY() {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("box[%d] is %v", i, v)
		}
	}
	if math.IsNaN(float64(d.Score)) || math.IsInf(float64(d.Score), 0) {
		return fmt.Errorf("score is %v", d.Score)
	}
	for i, v := range d.StageScores {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("stage score %d is %v", i, v)
		}
	}
	return nil
}

// Close flushes the file to disk and closes it. It is idempotent (later
// calls return nil) and safe from another goroutine than Write's.
func (s *JSONSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stdout {
		return nil
	}
	sync := s.f.Sync()
	if errors.Is(sync, syscall.EINVAL) {
		sync = nil // a device such as /dev/null cannot be synced, and needs not be
	}
	err := errors.Join(sync, s.f.Close())
	if err != nil {
		return fmt.Errorf("detections sink %s: %w", s.path, err)
	}
	return nil
}
