package pipeline

import (
	"context"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/flow"
	"github.com/htcstream/htcstream/motion"
)

// BenchmarkPropagateAndMotion1080p is the per-frame cost of a frame the
// model does not see, at 1080p with 20 tracks: the motion detector on the
// frame, then the 20 tracks carried to it (Kalman prediction, masks moved
// with their boxes, or followed by optical flow). Drawing and the sinks
// are not in it: they cost the same on every frame. flow-flat is flow on
// objects of one colour over a flat background, which it cannot follow:
// what its corner searches cost.
func BenchmarkPropagateAndMotion1080p(b *testing.B) {
	b.Run("box", func(b *testing.B) { benchPropagate(b, PropagateBox, true) })
	b.Run("flow", func(b *testing.B) { benchPropagate(b, PropagateFlow, true) })
	b.Run("flow-flat", func(b *testing.B) { benchPropagate(b, PropagateFlow, false) })
}

func benchPropagate(b *testing.B, prop Propagation, textured bool) {
	const w, h, n = 1920, 1080, 20
	pt, err := newPlainTracker()
	if err != nil {
		b.Fatal(err)
	}
	dets := func(seq int) []detection.Detection {
		var ds []detection.Detection
		for k := range n {
			x := float32(40+(k%5)*360) + float32(seq*3)
			y := float32(40 + (k/5)*250)
			box := detection.Box{X1: x, Y1: y, X2: x + 120, Y2: y + 220}
			m := detection.Mask{X: int(x), Y: int(y), W: 120, H: 220, Bits: make([]byte, 120*220)}
			for i := range m.Bits {
				m.Bits[i] = byte(i % 2)
			}
			ds = append(ds, detection.Detection{Box: box, Score: 0.9, Mask: m})
		}
		return ds
	}
	// a smooth background, each object a patch that moves with its box,
	// textured so that the flow finds corners and follows them
	frame := func(seq int) *decode.Frame {
		rgb := make([]byte, w*h*3)
		for i := range rgb {
			rgb[i] = byte(i / (w * 3 * 8))
		}
		for _, d := range dets(seq) {
			x0, y0 := int(d.Box.X1), int(d.Box.Y1)
			for y := y0; y < int(d.Box.Y2); y++ {
				for x := x0; x < int(d.Box.X2); x++ {
					v := byte(200)
					if textured {
						v = byte(((x-x0)/6*7 ^ (y-y0)/6*13) * 37)
					}
					copy(rgb[(y*w+x)*3:], []byte{v, v / 2, 255 - v})
				}
			}
		}
		return &decode.Frame{Seq: int64(seq), PTS: time.Duration(seq) * 40 * time.Millisecond, Width: w, Height: h, RGB: rgb}
	}
	for seq := 0; seq <= 30; seq += 3 {
		f := frame(seq)
		pt.Track(&Output{Frame: f, Result: cascade.Result{Width: w, Height: h, Detections: dets(seq)}})
	}
	sc, err := newScheduler("bench", Schedule{Interval: 3, Motion: &motion.Config{}}, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	st := &streamOut{name: "bench", credits: make(chan struct{}, 1), pred: pt, sc: sc, havePrev: true}
	if prop == PropagateFlow {
		st.mover = flow.NewMover()
		st.anchor(frame(30), pt.Predict(frame(30).PTS))
	}
	frames := []*decode.Frame{frame(31), frame(32)}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		f := frames[i%2]
		if _, err := sc.det.Detect(f.RGB, w, h); err != nil {
			b.Fatal(err)
		}
		st.credits <- struct{}{}
		st.propagate(ctx, &slot{frame: f})
	}
}
