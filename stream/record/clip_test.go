package record

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// An event's clip is cut from the recordings around it: from the keyframe
// at or before its start, across a segment boundary, to its end; a player
// reads it and its length is the window's.
func TestCutClipAcrossSegments(t *testing.T) {
	src := clip(t, 12, 25) // a keyframe a second
	dir := t.TempDir()
	r, err := NewRecorder(SegmentConfig{Dir: dir, Camera: "gate", Segment: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var segs []Segment
	r.cfg.OnSegment = func(s Segment) {
		if s.Done {
			segs = append(segs, s)
		}
	}
	decodeAll(t, src, r, 0)
	r.Close()
	if len(segs) != 3 {
		t.Fatalf("%d segments", len(segs))
	}
	// The test decodes faster than real time; name the segments as a live
	// camera's would be, 4 s apart.
	t0 := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	for i, s := range segs {
		name := filepath.Join(dir, "gate", segmentName("gate", t0.Add(time.Duration(i)*4*time.Second)))
		if err := os.Rename(s.Path, name); err != nil {
			t.Fatal(err)
		}
	}

	out := filepath.Join(t.TempDir(), "event.mp4")
	got, err := CutClip(dir, "gate", t0.Add(2500*time.Millisecond), t0.Add(6500*time.Millisecond), out)
	if err != nil {
		t.Fatal(err)
	}
	codec, packets, dur := probe(t, out)
	// from the keyframe at 2 s to the first packet after 6.5 s
	if codec != "h264" || packets < 112 || packets > 114 || dur < 4.4 || dur > 4.7 {
		t.Fatalf("clip: %s, %d packets, %.2f s (reported %v); want h264, ~113 packets, ~4.5 s", codec, packets, dur, got)
	}
	if _, err := os.Stat(out + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a .partial file is left")
	}
	t.Logf("clip of 2.5..6.5 s: %d packets, %.2f s, from the keyframe at 2 s", packets, dur)

	if _, err := CutClip(dir, "gate", t0.Add(-time.Hour), t0.Add(-time.Minute), out+"2"); !errors.Is(err, ErrNoFootage) {
		t.Fatalf("a window before every recording: %v", err)
	}
	if _, err := os.Stat(out + "2.partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed clip leaves its .partial")
	}
}
