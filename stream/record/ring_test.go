package record

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Without a recording, the ring's last seconds give an event's clip: from
// the keyframe before its start, and nothing older than the ring keeps.
func TestRingClip(t *testing.T) {
	src := clip(t, 6, 25) // a keyframe a second
	r := NewRing(3*time.Second, 0)
	defer r.Close()
	start := time.Now()
	decodeAll(t, src, r, 40*time.Millisecond) // the camera's pace
	// 6 s went by; the ring keeps about the last 3 s (whole keyframe
	// intervals), so a window 1 s before the end is there
	end := time.Now()
	out := filepath.Join(t.TempDir(), "ev.mp4")
	got, err := r.Clip(end.Add(-1500*time.Millisecond), end, out)
	if err != nil {
		t.Fatal(err)
	}
	codec, packets, dur := probe(t, out)
	if codec != "h264" || dur < 1.4 || dur > 2.6 || packets < 35 {
		t.Fatalf("ring clip: %s, %d packets, %.2f s (%v); want 1.5-2.5 s of h264", codec, packets, dur, got)
	}
	// the start of the run is gone from it
	if _, err := r.Clip(start, start.Add(time.Second), filepath.Join(t.TempDir(), "old.mp4")); !errors.Is(err, ErrNoFootage) {
		t.Fatalf("a window older than the ring: %v", err)
	}
	t.Logf("ring clip: %d packets, %.2f s", packets, dur)
}
