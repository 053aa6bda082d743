package events

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/detection"
)

// testEvent is a complete event with a 2x2 mask at (1,1) in a 4x3 frame.
func testEvent(t *testing.T, typ EventType, camera string, track int64, label string) Event {
	t.Helper()
	first := time.Date(2024, 5, 1, 12, 3, 10, 250e6, time.UTC)
	e := Event{
		Type: typ, Camera: camera, TrackID: track, Label: label, ClassID: 0,
		FirstSeen: first, LastSeen: first.Add(1500 * time.Millisecond),
		FirstPTS: 2 * time.Second, LastPTS: 3500 * time.Millisecond,
		Score: 0.8, Box: [4]float32{1, 1, 3, 3},
		BestScore: 0.9, BestBox: [4]float32{1, 1, 3, 3}, BestPTS: 3 * time.Second,
		StageScores:  []float32{0.85, 0.9, 0.95},
		EnteredZones: []string{"driveway"}, Zones: []string{"driveway"},
		Snapshot: "/var/snap/" + camera + "/x.jpg",
	}
	if err := e.SetMask(detection.Mask{X: 1, Y: 1, W: 2, H: 2, Bits: []byte{1, 1, 0, 1}}, 4, 3); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEventJSON(t *testing.T) {
	e := testEvent(t, EventNew, "front", 12, "person")
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"new","id":"front-1714564990250-12","camera":"front","track_id":12,"label":"person","class_id":0,` +
		`"first_seen":"2024-05-01T12:03:10.250Z","last_seen":"2024-05-01T12:03:11.750Z","first_pts_ms":2000,"last_pts_ms":3500,` +
		`"duration_s":1.5,"score":0.8,"box":[1,1,3,3],"best_score":0.9,"best_box":[1,1,3,3],"best_pts_ms":3000,` +
		`"stage_scores":[0.85,0.9,0.95],"width":4,"height":3,"mask":{"size":[3,4],"counts":"4121;"},` +
		`"entered_zones":["driveway"],"zones":["driveway"],"snapshot":"/var/snap/front/x.jpg"}`
	// The mask's counts string is pycocotools' compression; check the rest
	// literally and the mask by decoding it.
	var got map[string]any
	json.Unmarshal(b, &got)
	mask := got["mask"].(map[string]any)
	counts := mask["counts"].(string)
	want = strings.Replace(want, `"counts":"4121;"`, `"counts":"`+counts+`"`, 1)
	if string(b) != want {
		t.Fatalf("event JSON\n got %s\nwant %s", b, want)
	}
	r, err := coco.ParseCounts(counts, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	bits, _ := r.Decode()
	wantBits := []byte{
		0, 0, 0, 0,
		0, 1, 1, 0,
		0, 0, 1, 0,
	}
	if !reflect.DeepEqual(bits, wantBits) {
		t.Fatalf("mask decodes to %v, want %v", bits, wantBits)
	}

	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	e.ID = EventID(e.Camera, e.FirstSeen, e.TrackID)
	if !reflect.DeepEqual(back, e) {
		t.Fatalf("round trip\n got %+v\nwant %+v", back, e)
	}
}

func TestEventJSONEmptyListsAndNoMask(t *testing.T) {
	e := Event{Type: EventEnd, Camera: "c", Label: "car", FirstSeen: time.Unix(0, 0), LastSeen: time.Unix(1, 0)}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`"stage_scores":[]`, `"entered_zones":[]`, `"zones":[]`, `"first_seen":"1970-01-01T00:00:00.000Z"`} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %s", s, want)
		}
	}
	for _, absent := range []string{`"mask"`, `"snapshot"`} {
		if strings.Contains(s, absent) {
			t.Errorf("%s has %s", s, absent)
		}
	}
}

func TestEventInvalid(t *testing.T) {
	nan := float32(math.NaN())
	for name, mod := range map[string]func(*Event){
		"type":        func(e *Event) { e.Type = "begin" },
		"camera":      func(e *Event) { e.Camera = "" },
		"label":       func(e *Event) { e.Label = "" },
		"score":       func(e *Event) { e.Score = nan },
		"box":         func(e *Event) { e.BestBox[2] = float32(math.Inf(1)) },
		"stage score": func(e *Event) { e.StageScores[1] = nan },
		"mask size":   func(e *Event) { e.Width = 5 },
	} {
		e := testEvent(t, EventUpdate, "c", 1, "dog")
		mod(&e)
		if _, err := json.Marshal(e); !errors.Is(err, ErrBadEvent) {
			t.Errorf("%s: marshal error %v, want ErrBadEvent", name, err)
		}
	}
	var e Event
	if err := e.SetMask(detection.Mask{W: 2, H: 2, Bits: []byte{1}}, 4, 4); err == nil {
		t.Error("SetMask took a region with too few bits")
	}
}
