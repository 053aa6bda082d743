package events

import (
	"math"
	"testing"

	"github.com/htcstream/htcstream/detection"
)

// A zone tests a point by the even-odd rule and a mask by the share of its
// pixels inside: a mask half across the zone's edge is half in.
func TestZonePointAndMaskShare(t *testing.T) {
	left := Zone{{0, 0}, {0.5, 0}, {0.5, 1}, {0, 1}} // the left half of the frame
	if !left.contains(0.25, 0.5) || left.contains(0.75, 0.5) {
		t.Fatal("point test")
	}
	// a 20x10 mask over x 40..59 of a 100x10 frame: half left of x = 50
	m := detection.Mask{X: 40, Y: 0, W: 20, H: 10, Bits: make([]byte, 200)}
	for i := range m.Bits {
		m.Bits[i] = 1
	}
	if s := left.maskShare(&m, 100, 10); math.Abs(s-0.5) > 0.01 {
		t.Fatalf("share %v, want 0.5", s)
	}
	if s := left.maskShare(&detection.Mask{}, 100, 10); s != 0 {
		t.Fatalf("an empty mask's share %v", s)
	}
}
