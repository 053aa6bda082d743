package infer_test

import (
	"math/rand"
	"reflect"
	"testing"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/infer"
)

// TestIOBindingMatchesPlainRuns runs the example bundle on the same frames
// with every graph bound (BindOn, as cuda and tensorrt sessions run) and
// plain: the detections, masks and stage scores must be identical, and the
// bound path must have been taken by all three graphs.
func TestIOBindingMatchesPlainRuns(t *testing.T) {
	const dir = "../examples/models/htc_tiny_synthetic"
	load := func(bind infer.IOBinding) (*infer.Bundle, *cascade.Model) {
		b, err := infer.LoadBundle(dir, infer.SessionOptions{IntraOpThreads: 2, IOBinding: bind})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		// a low threshold: tens of detections a frame, so the mask heads work too
		md, err := cascade.NewModel(b, cascade.Options{ScoreThreshold: 0.05})
		if err != nil {
			t.Fatal(err)
		}
		return b, md
	}
	plainB, plain := load(infer.BindOff)
	boundB, bound := load(infer.BindOn)

	rng := rand.New(rand.NewSource(3))
	frame := func(w, h int) cascade.Image {
		pix := make([]byte, w*h*3)
		for i := range pix {
			pix[i] = 90
		}
		for k := 0; k < 6; k++ { // a few filled rectangles over noise
			x0, y0 := rng.Intn(w/2), rng.Intn(h/2)
			c := []byte{byte(rng.Intn(256)), byte(rng.Intn(256)), byte(rng.Intn(256))}
			for y := y0; y < y0+h/4; y++ {
				for x := x0; x < x0+w/4; x++ {
					copy(pix[(y*w+x)*3:], c)
				}
			}
		}
		for i := 0; i < len(pix); i += 7 {
			pix[i] ^= byte(rng.Intn(32))
		}
		return cascade.Image{Width: w, Height: h, Pix: pix, Order: infer.RGB}
	}
	a, b := frame(320, 240), frame(320, 240)
	// each batch twice: its second run finds every graph's input shapes learnt
	for _, batch := range [][]cascade.Image{{a}, {a}, {a, b}, {a, b}} {
		want, _, err := plain.Detect(batch)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := bound.Detect(batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if len(want[i].Detections) < 5 {
				t.Fatalf("frame %d of a batch of %d: no detections, nothing compared", i, len(batch))
			}
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("frame %d of a batch of %d: bound and plain runs differ (%d vs %d detections)",
					i, len(batch), len(got[i].Detections), len(want[i].Detections))
			}
		}
	}
	for _, s := range boundB.Sessions() {
		if infer.BoundRuns(s) == 0 {
			t.Errorf("%v: no bound run", s.Outputs[0].Name)
		}
	}
	for _, s := range plainB.Sessions() {
		if infer.BoundRuns(s) != 0 {
			t.Errorf("BindOff: %d bound runs", infer.BoundRuns(s))
		}
	}
}
