package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/stream/record"
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

// TestDetectionsNameTheStuffRegions: the JSON lines list the stuff regions
// of the semantic map by their COCO-stuff names, largest first, from 1% of
// the frame; thing channels (90, "hair brush") and specks are left out.
func TestDetectionsNameTheStuffRegions(t *testing.T) {
	names := make([]string, 183)
	stuff := make([]bool, 183)
	for c := range names {
		names[c] = fmt.Sprintf("c%d", c)
		stuff[c] = c >= 91
	}
	names[156], names[148], names[90] = "sky-other", "road", "hair brush"
	// 1000 pixels: 600 sky, 300 road, 95 hair brush (a thing), 5 of channel 120 (0.5%)
	labels := make([]uint8, 0, 1000)
	for c, n := range map[uint8]int{156: 600, 148: 300, 90: 95, 120: 5} {
		for range n {
			labels = append(labels, c)
		}
	}
	got := StuffRegions(labels, names, stuff, MinStuffArea)
	want := []record.Region{{Label: "sky-other", ClassID: 156, Area: 0.6}, {Label: "road", ClassID: 148, Area: 0.3}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("regions %+v, want %+v", got, want)
	}

	path := filepath.Join(t.TempDir(), "d.jsonl")
	js, err := record.NewJSONSink(path)
	if err != nil {
		t.Fatal(err)
	}
	ds := &DetectionsSink{S: js, SemanticClasses: names, Stuff: stuff}
	u := ds.For()
	frame := &decode.Frame{Width: 40, Height: 25}
	if err := u.Write(&Output{Stream: "s", Frame: frame, Result: cascade.Result{Width: 40, Height: 25, Semantic: labels}}); err != nil {
		t.Fatal(err)
	}
	// no semantic map (stuff tint off): no "stuff" key at all
	if err := u.Write(&Output{Stream: "s", Frame: frame, Result: cascade.Result{Width: 40, Height: 25}}); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if !strings.Contains(lines[0], `"stuff":[{"label":"sky-other","class_id":156,"area":0.6},{"label":"road","class_id":148,"area":0.3}]`) {
		t.Errorf("line 1: %s", lines[0])
	}
	if strings.Contains(lines[1], "stuff") {
		t.Errorf("line 2 has stuff without a semantic map: %s", lines[1])
	}
}
