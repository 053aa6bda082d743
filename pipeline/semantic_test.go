package pipeline

import (
	"testing"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/overlay"
)

// TestOverlayDrawerTintsTheStuffChannels: with the COCO-stuff layout
// (stuff = channels 91-182) the drawer tints by the bundle's per-channel
// mask; a thing channel above the thing count (90, "hair brush") stays
// untouched, which the old "first stuff = number of things" rule got wrong.
func TestOverlayDrawerTintsTheStuffChannels(t *testing.T) {
	stuff := make([]bool, 183)
	for c := 91; c < 183; c++ {
		stuff[c] = true
	}
	const w, h = 3, 1
	rgb := make([]byte, 3*w*h)
	for i := range rgb {
		rgb[i] = 100
	}
	d := &OverlayDrawer{Renderer: overlay.NewRenderer(overlay.Style{Alpha: 0.5}, nil), StuffTint: 0.5, Stuff: stuff}
	o := &Output{Stream: "s", Frame: &decode.Frame{Width: w, Height: h, RGB: rgb},
		Result: cascade.Result{Width: w, Height: h, Semantic: []uint8{0, 90, 156}}}
	if err := d.Draw(o); err != nil {
		t.Fatal(err)
	}
	for x, tinted := range []bool{false, false, true} {
		px := rgb[3*x : 3*x+3]
		if got := px[0] != 100 || px[1] != 100 || px[2] != 100; got != tinted {
			t.Errorf("pixel %d (channel %d): tinted %v, want %v", x, o.Result.Semantic[x], got, tinted)
		}
	}
}
