package pipeline

import (
	"math/rand"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
)

type nopPublisher struct{ n int }

func (p *nopPublisher) Publish(events.Event) error { p.n++; return nil }

// BenchmarkEventStage is the tracker and event path of one frame at 100
// detections (1920x1080, 5 classes, masks of each box's size, 10 % of
// detections low-score): EventStage.Track and Drawn on the output
// goroutine, and the worker's share (masks' RLE, publishing) since End
// waits for the worker inside the timing. ns/op = ns per frame.
func BenchmarkEventStage(b *testing.B) {
	for _, c := range []struct {
		name  string
		zones bool
		snaps bool
	}{{"100dets", false, false}, {"100dets-2zones", true, false}, {"100dets-2zones-snapshots", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			const w, h, n = 1920, 1080, 100
			rng := rand.New(rand.NewSource(9))
			type obj struct{ x, y, vx, vy, w, h float32 }
			objs := make([]obj, n)
			masks := make([]detection.Mask, n)
			for i := range objs {
				o := obj{w: 20 + rng.Float32()*60, h: 20 + rng.Float32()*80, vx: rng.Float32()*10 - 5, vy: rng.Float32()*10 - 5}
				o.x, o.y = rng.Float32()*(w-o.w), rng.Float32()*(h-o.h)
				objs[i] = o
				m := detection.Mask{W: int(o.w), H: int(o.h), Bits: make([]byte, int(o.w)*int(o.h))}
				for k := range m.Bits {
					m.Bits[k] = byte(rng.Intn(2))
				}
				masks[i] = m
			}
			rules := defaultEvents().EventRules
			rules.Enabled = true
			cfg := EventStageConfig{Camera: "cam", Classes: []string{"a", "b", "c", "d", "e"}, Rules: rules,
				Keep: func(d *detection.Detection) bool { return d.Score >= 0.3 }, Publishers: []events.Publisher{&nopPublisher{}}}
			if c.zones {
				cfg.Zones = map[string]Zone{"left": {{0, 0}, {0.5, 0}, {0.5, 1}, {0, 1}}, "band": {{0, 0.4}, {1, 0.4}, {1, 0.6}, {0, 0.6}}}
			}
			if c.snaps {
				st, err := record.NewSnapshotStore(record.SnapshotStoreConfig{Dir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				cfg.Store = st
			}
			s, err := NewEventStage(cfg)
			if err != nil {
				b.Fatal(err)
			}
			rgb := make([]byte, w*h*3)
			frame := func(seq int) *Output {
				dets := make([]detection.Detection, n)
				for i := range objs {
					o := &objs[i]
					o.x += o.vx
					o.y += o.vy
					if o.x < 0 || o.x+o.w > w {
						o.vx = -o.vx
					}
					if o.y < 0 || o.y+o.h > h {
						o.vy = -o.vy
					}
					score := float32(0.9)
					if rng.Intn(10) == 0 {
						score = 0.3
					}
					m := masks[i]
					m.X, m.Y = int(o.x), int(o.y)
					dets[i] = detection.Detection{Box: detection.Box{X1: o.x, Y1: o.y, X2: o.x + o.w, Y2: o.y + o.h}, Score: score,
						Label: i % 5, StageScores: []float32{score, score, score}, Mask: m}
				}
				return &Output{Stream: "cam", Frame: &decode.Frame{Seq: int64(seq), PTS: time.Duration(seq) * 66 * time.Millisecond,
					Captured: time.Now(), Width: w, Height: h, RGB: rgb}, Result: cascade.Result{Width: w, Height: h, Detections: dets}}
			}
			for f := 0; f < 10; f++ { // tracks confirmed, new events out, as in a running stream
				o := frame(f)
				s.Track(o)
				s.Drawn(o)
			}
			s.Flush() // the confirmations' snapshots are saved
			outs := make([]*Output, b.N)
			for i := range outs {
				outs[i] = frame(10 + i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for _, o := range outs {
				s.Track(o)
				s.Drawn(o)
			}
			s.End()
			b.StopTimer()
			if s.Live() != 0 {
				b.Fatal("tracks left after End")
			}
		})
	}
}
