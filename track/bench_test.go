package track

import (
	"math/rand"
	"testing"
	"time"

	"github.com/htcstream/htcstream/detection"
)

// benchScene is n objects bouncing around a 1920x1080 frame with jittered
// boxes, optional 32x32-ish masks, a few low-score frames each.
type benchScene struct {
	x, y, vx, vy, w, h []float32
	class              []int
	masks              []detection.Mask
	rng                *rand.Rand
}

func newBenchScene(n, classes int, withMasks bool) *benchScene {
	rng := rand.New(rand.NewSource(9))
	s := &benchScene{rng: rng}
	for i := 0; i < n; i++ {
		w, h := 20+rng.Float32()*60, 20+rng.Float32()*80
		s.x = append(s.x, rng.Float32()*(1920-w))
		s.y = append(s.y, rng.Float32()*(1080-h))
		s.vx = append(s.vx, rng.Float32()*10-5)
		s.vy = append(s.vy, rng.Float32()*10-5)
		s.w, s.h = append(s.w, w), append(s.h, h)
		s.class = append(s.class, i%classes)
		if withMasks {
			m := detection.Mask{W: int(w), H: int(h), Bits: make([]byte, int(w)*int(h))}
			for k := range m.Bits {
				m.Bits[k] = byte(rng.Intn(2))
			}
			s.masks = append(s.masks, m)
		}
	}
	return s
}

// frame advances the scene one frame and fills dets.
func (s *benchScene) frame(dets []detection.Detection) []detection.Detection {
	dets = dets[:0]
	for i := range s.x {
		s.x[i] += s.vx[i]
		s.y[i] += s.vy[i]
		if s.x[i] < 0 || s.x[i]+s.w[i] > 1920 {
			s.vx[i] = -s.vx[i]
		}
		if s.y[i] < 0 || s.y[i]+s.h[i] > 1080 {
			s.vy[i] = -s.vy[i]
		}
		j := func() float32 { return s.rng.Float32()*2 - 1 }
		d := detection.Detection{
			Box:   detection.Box{X1: s.x[i] + j(), Y1: s.y[i] + j(), X2: s.x[i] + s.w[i] + j(), Y2: s.y[i] + s.h[i] + j()},
			Score: 0.9,
			Label: s.class[i],
		}
		if s.rng.Intn(10) == 0 {
			d.Score = 0.3
		}
		if s.masks != nil {
			d.Mask = s.masks[i]
			d.Mask.X, d.Mask.Y = int(d.Box.X1), int(d.Box.Y1)
		}
		dets = append(dets, d)
	}
	return dets
}

// BenchmarkUpdate is one Update at 100 detections a frame (ns/op = ns per
// frame, an upper bound: it includes making the frame's detections), the budget: under 1 % of the ~200 ms graph time.
func BenchmarkUpdate(b *testing.B) {
	for _, c := range []struct {
		name    string
		classes int
		masks   bool
	}{
		{"100dets-5classes", 5, false},
		{"100dets-1class", 1, false},
		{"100dets-1class-masks", 1, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newBenchScene(100, c.classes, c.masks)
			tr, err := NewTracker(DefaultSettings())
			if err != nil {
				b.Fatal(err)
			}
			dets := make([]detection.Detection, 0, 100)
			// Warm up until the tracks are confirmed, as in a running stream.
			for f := 0; f < 10; f++ {
				tr.Update(int64(f), time.Duration(f)*frameDur, s.frame(dets))
			}
			b.ReportAllocs()
			b.ResetTimer()
			// Making a frame's detections (a few µs) is timed too: stopping
			// the timer 100k times costs more than it.
			for i := 0; i < b.N; i++ {
				dets = s.frame(dets)
				f := 10 + i
				tr.Update(int64(f), time.Duration(f)*frameDur, dets)
			}
			b.StopTimer()
			if n := len(tr.Active()); n < 90 {
				b.Fatalf("only %d of 100 objects tracked", n)
			}
		})
	}
}
