package pipeline

import (
	"testing"

	"github.com/htcstream/htcstream/ingest"
)

func TestProgressBarAndExpectedFrames(t *testing.T) {
	if b := Bar(5, 20); b != "[#####...............]" {
		t.Fatalf("bar %q", b)
	}
	if b := Bar(30, 20); b != "[####################]" {
		t.Fatalf("overfull bar %q", b)
	}
	src, err := ingest.Parse("../examples/sample.mp4")
	if err != nil {
		t.Fatal(err)
	}
	cams := []Camera{{Name: "a"}, {Name: "b"}}
	parsed := []ingest.Source{src, src}
	if n := expectedFrames(cams, parsed, 0); n != 300 {
		t.Fatalf("expected frames %d, want 300", n)
	}
	if n := expectedFrames(cams, parsed, 10); n != 20 {
		t.Fatalf("with a 10-frame limit: %d, want 20", n)
	}
	cams[1].Loop = true
	if n := expectedFrames(cams, parsed, 0); n != 0 {
		t.Fatalf("a looping camera has no end: %d", n)
	}
}

func TestRateKeepsASlowModelReadable(t *testing.T) {
	for fps, want := range map[float64]string{
		0:      "0 fps",
		25:     "25.0 fps",
		0.35:   "0.35 fps (2.9 s/frame)",
		0.0141: "0.014 fps (70.9 s/frame)",
	} {
		if got := Rate(fps); got != want {
			t.Errorf("Rate(%g) = %q, want %q", fps, got, want)
		}
	}
}
