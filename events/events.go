package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/detection"
)

// EventType says what happened to a tracked instance.
type EventType string

// The event types, as the JSON's "type" carries them.
const (
	// EventNew: the track was confirmed (it has been seen often enough).
	EventNew EventType = "new"
	// EventUpdate: something material changed (a better score, a zone
	// entered or left, or the periodic refresh).
	EventUpdate EventType = "update"
	// EventEnd: the track died; the event holds its final state.
	EventEnd EventType = "end"
)

// Valid reports whether t is one of new, update, end.
func (t EventType) Valid() bool {
	return t == EventNew || t == EventUpdate || t == EventEnd
}

// Event is a tracked instance's event as it leaves htcstream: one JSON
// object on MQTT's events topic and in a webhook's POST body. The format is
// documented in docs/events.md; change the two together.
//
// Sinks take an Event by value and may marshal it later on their own
// goroutine: the caller must not modify the slices it holds (StageScores,
// Mask, the zones) after handing it to a sink.
type Event struct {
	Type EventType
	// ID names the tracked object uniquely across restarts and workers;
	// empty = EventID(Camera, FirstSeen, TrackID) at marshal time.
	ID      string
	Camera  string
	TrackID int64
	Label   string
	ClassID int

	// FirstSeen and LastSeen are wall-clock times of the track's first and
	// latest frames; FirstPTS and LastPTS the same frames' stream times.
	FirstSeen, LastSeen time.Time
	FirstPTS, LastPTS   time.Duration

	// Score and Box are the latest frame's (box: x1, y1, x2, y2 in frame
	// pixels).
	Score float32
	Box   [4]float32
	// BestScore, BestBox, BestPTS, StageScores and Mask are the frame with
	// the highest score so far, the frame of the snapshot. StageScores are
	// each cascade stage's own score for the class there.
	BestScore   float32
	BestBox     [4]float32
	BestPTS     time.Duration
	StageScores []float32
	// Width and Height are the frame's size, the size of Mask's RLE.
	Width, Height int
	// Mask is the best frame's instance mask over the whole frame, or nil;
	// SetMask makes it from a detection's mask.
	Mask *coco.RLE

	// EnteredZones lists every zone the track has entered so far, in the
	// order entered; Zones the zones it is in now.
	EnteredZones []string
	Zones        []string

	// Snapshot is the path of the best frame's JPEG (SnapshotStore.Save's
	// result), SnapshotURL where a client fetches it; empty when none.
	Snapshot    string
	SnapshotURL string
	// ClipURL, on end events of a recording camera, is where a client
	// fetches the event's clip (cut from the recordings, pre- and post-roll
	// included, when first asked for); empty otherwise.
	ClipURL string
}

// EventID is the default event ID: "<camera>-<first seen, Unix ms>-<track
// id>". Track ids restart with the process; the time keeps IDs of
// different runs apart.
func EventID(camera string, firstSeen time.Time, trackID int64) string {
	return camera + "-" + strconv.FormatInt(firstSeen.UnixMilli(), 10) + "-" + strconv.FormatInt(trackID, 10)
}

// SetMask sets e.Mask to the COCO RLE of m in a width x height frame and
// records the frame size. An empty mask clears it.
func (e *Event) SetMask(m detection.Mask, width, height int) error {
	e.Width, e.Height = width, height
	if m.Empty() {
		e.Mask = nil
		return nil
	}
	r, err := coco.EncodeRegion(m.X, m.Y, m.W, m.H, m.Bits, width, height)
	if err != nil {
		return fmt.Errorf("event mask: %w", err)
	}
	e.Mask = &r
	return nil
}

// eventJSON is the wire format. The field names are the format: change them
// only with docs/events.md.
type eventJSON struct {
	Type         EventType  `json:"type"`
	ID           string     `json:"id"`
	Camera       string     `json:"camera"`
	TrackID      int64      `json:"track_id"`
	Label        string     `json:"label"`
	ClassID      int        `json:"class_id"`
	FirstSeen    string     `json:"first_seen"`
	LastSeen     string     `json:"last_seen"`
	FirstPTSms   float64    `json:"first_pts_ms"`
	LastPTSms    float64    `json:"last_pts_ms"`
	DurationS    float64    `json:"duration_s"`
	Score        float32    `json:"score"`
	Box          [4]float32 `json:"box"`
	BestScore    float32    `json:"best_score"`
	BestBox      [4]float32 `json:"best_box"`
	BestPTSms    float64    `json:"best_pts_ms"`
	StageScores  []float32  `json:"stage_scores"`
	Width        int        `json:"width"`
	Height       int        `json:"height"`
	Mask         *coco.RLE  `json:"mask,omitempty"`
	EnteredZones []string   `json:"entered_zones"`
	Zones        []string   `json:"zones"`
	Snapshot     string     `json:"snapshot,omitempty"`
	SnapshotURL  string     `json:"snapshot_url,omitempty"`
	ClipURL      string     `json:"clip_url,omitempty"`
}

// timeLayout is RFC 3339 in UTC with milliseconds.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ErrClosed is returned (wrapped) by every Publish after the sink's Close.
var ErrClosed = errors.New("stream: closed")

// ErrBadEvent is wrapped by the errors about events that cannot be sent:
// an unknown type, no camera, numbers JSON cannot carry.
var ErrBadEvent = errors.New("bad event")

// Validate reports what makes e unfit to send, or nil.
func (e *Event) Validate() error {
	if !e.Type.Valid() {
		return fmt.Errorf("%w: type %q is not new, update or end", ErrBadEvent, e.Type)
	}
	if e.Camera == "" {
		return fmt.Errorf("%w: no camera", ErrBadEvent)
	}
	if e.Label == "" {
		return fmt.Errorf("%w: no label", ErrBadEvent)
	}
	fin := func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }
	if !fin(e.Score) || !fin(e.BestScore) {
		return fmt.Errorf("%w: score %v, best score %v", ErrBadEvent, e.Score, e.BestScore)
	}
	for i := range 4 {
		if !fin(e.Box[i]) || !fin(e.BestBox[i]) {
			return fmt.Errorf("%w: box %v, best box %v", ErrBadEvent, e.Box, e.BestBox)
		}
	}
	for i, v := range e.StageScores {
		if !fin(v) {
			return fmt.Errorf("%w: stage score %d is %v", ErrBadEvent, i, v)
		}
	}
	if e.Mask != nil {
		if e.Mask.Height() != e.Height || e.Mask.Width() != e.Width {
			return fmt.Errorf("%w: mask is %dx%d, frame %dx%d", ErrBadEvent, e.Mask.Width(), e.Mask.Height(), e.Width, e.Height)
		}
	}
	return nil
}

// MarshalJSON writes the event in the format of docs/events.md.
func (e Event) MarshalJSON() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	j := eventJSON{
		Type: e.Type, ID: e.ID, Camera: e.Camera, TrackID: e.TrackID,
		Label: e.Label, ClassID: e.ClassID,
		FirstSeen: e.FirstSeen.UTC().Format(timeLayout), LastSeen: e.LastSeen.UTC().Format(timeLayout),
		FirstPTSms: ms(e.FirstPTS), LastPTSms: ms(e.LastPTS),
		DurationS: e.LastSeen.Sub(e.FirstSeen).Seconds(),
		Score:     e.Score, Box: e.Box,
		BestScore: e.BestScore, BestBox: e.BestBox, BestPTSms: ms(e.BestPTS),
		StageScores: e.StageScores, Width: e.Width, Height: e.Height, Mask: e.Mask,
		EnteredZones: e.EnteredZones, Zones: e.Zones,
		Snapshot: e.Snapshot, SnapshotURL: e.SnapshotURL, ClipURL: e.ClipURL,
	}
	if j.ID == "" {
		j.ID = EventID(e.Camera, e.FirstSeen, e.TrackID)
	}
	if j.StageScores == nil {
		j.StageScores = []float32{}
	}
	if j.EnteredZones == nil {
		j.EnteredZones = []string{}
	}
	if j.Zones == nil {
		j.Zones = []string{}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads an event in the format of docs/events.md (what a
// subscriber gets), so Go consumers and tests can use Event directly.
func (e *Event) UnmarshalJSON(data []byte) error {
	var j eventJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("event: %w", err)
	}
	first, err := time.Parse(time.RFC3339Nano, j.FirstSeen)
	if err != nil {
		return fmt.Errorf("event first_seen: %w", err)
	}
	last, err := time.Parse(time.RFC3339Nano, j.LastSeen)
	if err != nil {
		return fmt.Errorf("event last_seen: %w", err)
	}
	dur := func(v float64) time.Duration { return time.Duration(math.Round(v * float64(time.Millisecond))) }
	*e = Event{
		Type: j.Type, ID: j.ID, Camera: j.Camera, TrackID: j.TrackID,
		Label: j.Label, ClassID: j.ClassID,
		FirstSeen: first, LastSeen: last, FirstPTS: dur(j.FirstPTSms), LastPTS: dur(j.LastPTSms),
		Score: j.Score, Box: j.Box, BestScore: j.BestScore, BestBox: j.BestBox, BestPTS: dur(j.BestPTSms),
		StageScores: j.StageScores, Width: j.Width, Height: j.Height, Mask: j.Mask,
		EnteredZones: j.EnteredZones, Zones: j.Zones,
		Snapshot: j.Snapshot, SnapshotURL: j.SnapshotURL, ClipURL: j.ClipURL,
	}
	return nil
}
