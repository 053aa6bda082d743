package pipeline

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/track"
)

// walkSource emits frames of a square walking right 2 px a frame; the
// square's position is written in the frame's first pixels so a detector
// can find it. Frames are 25 fps in pts; gone, when > 0, is the first
// frame without the square.
type walkSource struct {
	name  string
	live  bool
	n     int
	every time.Duration // wall-clock gap between frames (live)
	gone  int
}

const walkW, walkH = 160, 64

func walkBox(seq int) detection.Box {
	x := float32(4 + 2*seq)
	return detection.Box{X1: x, Y1: 16, X2: x + 20, Y2: 46}
}

func (s *walkSource) Name() string { return s.name }
func (s *walkSource) Live() bool   { return s.live }
func (s *walkSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	for i := 0; i < s.n; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rgb := make([]byte, walkW*walkH*3)
		rgb[0], rgb[1] = byte(i), byte(i>>8)
		if s.gone > 0 && i >= s.gone {
			rgb[2] = 1 // nothing there
		}
		f := &decode.Frame{StreamID: s.name, Seq: int64(i), PTS: time.Duration(i) * 40 * time.Millisecond,
			Width: walkW, Height: walkH, RGB: rgb, Captured: time.Now()}
		if !emit(f) {
			return nil
		}
		if s.every > 0 {
			time.Sleep(s.every)
		}
	}
	return nil
}

// walkDetector finds the walking square, with its full mask, taking delay
// per batch; it records the frames it saw.
type walkDetector struct {
	delay time.Duration
	mu    sync.Mutex
	seen  []int
}

func (d *walkDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	time.Sleep(d.delay)
	out := make([]cascade.Result, len(frames))
	for k, f := range frames {
		seq := int(f.Pix[0]) | int(f.Pix[1])<<8
		d.mu.Lock()
		d.seen = append(d.seen, seq)
		d.mu.Unlock()
		out[k] = cascade.Result{Width: f.Width, Height: f.Height}
		if f.Pix[2] != 0 {
			continue
		}
		b := walkBox(seq)
		m := detection.Mask{X: int(b.X1), Y: int(b.Y1), W: int(b.Width()), H: int(b.Height())}
		m.Bits = make([]byte, m.W*m.H)
		for i := range m.Bits {
			m.Bits[i] = 1
		}
		out[k].Detections = []detection.Detection{{Box: b, Score: 0.9, Label: 0, Mask: m}}
	}
	return out, cascade.Timings{}, nil
}

// outSink keeps every output as it came.
type outSink struct {
	mu   sync.Mutex
	outs []Output
}

func (s *outSink) Write(o *Output) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outs = append(s.outs, *o)
	return nil
}
func (s *outSink) Close() error { return nil }

func runWalk(t *testing.T, src *walkSource, det *walkDetector, sch Schedule) ([]Output, *Metrics) {
	t.Helper()
	sink := &outSink{}
	met := NewMetrics("cpu")
	err := Run(context.Background(), context.Background(), Config{
		Sources:   []Source{src},
		Detector:  det,
		Schedules: []Schedule{sch},
		Sinks:     func(string) ([]Sink, error) { return []Sink{sink}, nil },
		Metrics:   met,
	})
	if err != nil {
		t.Fatal(err)
	}
	return sink.outs, met
}

func TestIntervalOnAFileInterpolatesEveryFrame(t *testing.T) {
	det := &walkDetector{}
	outs, met := runWalk(t, &walkSource{name: "f", n: 40}, det, Schedule{Interval: 3})
	if len(outs) != 40 {
		t.Fatalf("%d frames out of 40", len(outs))
	}
	for i, o := range outs {
		if o.Frame.Seq != int64(i) {
			t.Fatalf("output %d is frame %d", i, o.Frame.Seq)
		}
		if o.Keyframe != (i%3 == 0) || o.Propagated == o.Keyframe {
			t.Fatalf("frame %d: keyframe %v propagated %v", i, o.Keyframe, o.Propagated)
		}
		if len(o.Result.Detections) != 1 {
			// the last frames after the last keyframe are propagated, all
			// the others interpolated: the square is on every one
			t.Fatalf("frame %d: %d detections", i, len(o.Result.Detections))
		}
		got, want := o.Result.Detections[0].Box, walkBox(i)
		if d := got.X1 - want.X1; d > 1.5 || d < -1.5 || got.Width() != want.Width() {
			t.Fatalf("frame %d: box %v, square at %v", i, got, want)
		}
		m := o.Result.Detections[0].Mask
		if m.W != 20 || m.H != 30 || m.X != int(got.X1+0.5) {
			t.Fatalf("frame %d: mask at %d,%d %dx%d, box %v", i, m.X, m.Y, m.W, m.H, got)
		}
	}
	if !slices.Equal(det.seen, []int{0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39}) {
		t.Fatalf("the model saw %v", det.seen)
	}
	if k, p, s := met.ScheduleCounts("f"); k != 14 || p != 26 || s != 0 {
		t.Fatalf("counts: %d keyframes, %d propagated, %d still", k, p, s)
	}
	var page strings.Builder
	if _, err := met.WriteTo(&page); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`htcstream_schedule_frames_total{camera="f",kind="keyframe"} 14`,
		`htcstream_schedule_frames_total{camera="f",kind="propagated"} 26`, `htcstream_model_fps{camera="f"}`,
		`htcstream_keyframes_total{camera="f",why="interval"} 14`,
		`htcstream_model_wait_seconds_count{camera="f",why="interval"} 14`} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A track that the model stopped seeing is never drawn on a later frame:
// neither between the keyframes around its end nor after them.
func TestPropagationNeverDrawsAGoneTrack(t *testing.T) {
	for _, timing := range []Timing{TimingSmooth, TimingLive} {
		det := &walkDetector{}
		outs, _ := runWalk(t, &walkSource{name: "f", n: 60, gone: 31}, det, Schedule{Interval: 4, Timing: timing})
		if len(outs) != 60 {
			t.Fatalf("%s: %d frames out", timing, len(outs))
		}
		// Smooth timing knows the next keyframe (32) before drawing: the
		// square stays for the first half of the gap after its last
		// keyframe (28), as the model saw it there, then never again. Live
		// timing draws the track until the result of keyframe 32 says it
		// is gone, and never again after.
		lastSeen, firstEmpty := 28, -1
		for i, o := range outs {
			if i > lastSeen && len(o.Result.Detections) == 0 && firstEmpty < 0 {
				firstEmpty = i
			}
			if firstEmpty >= 0 && len(o.Result.Detections) > 0 {
				t.Fatalf("%s: frame %d draws the square after frame %d had it gone", timing, i, firstEmpty)
			}
		}
		if timing == TimingSmooth && firstEmpty != lastSeen+2 || firstEmpty < 0 || firstEmpty > 45 {
			t.Fatalf("%s: the square is drawn until frame %d, its last keyframe was %d", timing, firstEmpty, lastSeen)
		}
		if len(outs[lastSeen].Result.Detections) != 1 || len(outs[lastSeen-1].Result.Detections) != 1 {
			t.Fatalf("%s: the square is missing before it left", timing)
		}
	}
}

// A live camera at 25 fps against a model ten times slower: every frame
// still goes out, in order, nearly all of them with the square, and the
// model ran on a fraction of them.
func TestLiveAutoAnnotatesEveryFrame(t *testing.T) {
	det := &walkDetector{delay: 120 * time.Millisecond}
	outs, met := runWalk(t, &walkSource{name: "cam", live: true, n: 75, every: 12 * time.Millisecond}, det,
		Schedule{Interval: IntervalAuto})
	in, out, dropped := met.Snapshot("cam")
	if in != 75 || int(out) != len(outs) || out+dropped != in || float64(out) < 0.95*75 {
		t.Fatalf("in %d out %d dropped %d", in, out, dropped)
	}
	annotated := 0
	var lat []time.Duration
	for i, o := range outs {
		if i > 0 && o.Frame.Seq <= outs[i-1].Frame.Seq {
			t.Fatalf("out of order at %d", i)
		}
		if len(o.Result.Detections) == 1 {
			annotated++
		}
		lat = append(lat, o.Latency)
	}
	// a figure, not a test: the machine's load decides it
	slices.Sort(lat)
	t.Logf("median capture-to-drawn latency %v (the model takes 120 ms a frame)", lat[len(lat)/2])
	// before the first result nothing is known: only those frames are bare
	if annotated < len(outs)-20 {
		t.Fatalf("%d of %d frames annotated", annotated, len(outs))
	}
	k, _, _ := met.ScheduleCounts("cam")
	if k < 2 || k > 20 || int(k) != len(det.seen) {
		t.Fatalf("%d keyframes counted, model ran on %v", k, det.seen)
	}
}

// The model rate counts the keyframes of the last window, so it falls to 0
// once a camera's frames go out without the model (a still scene), where a
// rate smoothed over the gaps between keyframes would keep its last value.
func TestModelFPSFallsWhileTheModelSkipsTheCamera(t *testing.T) {
	met := NewMetrics("cpu")
	met.sched.window = 200 * time.Millisecond
	fps := func() string {
		var page strings.Builder
		if _, err := met.WriteTo(&page); err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(page.String(), "\n") {
			if v, ok := strings.CutPrefix(l, `htcstream_model_fps{camera="cam"} `); ok {
				return v
			}
		}
		return "absent"
	}
	for range 5 {
		met.scheduled("cam", "keyframe")
	}
	// 5 keyframes over the window (a fifth of a second here)
	if got := fps(); got != "25" {
		t.Fatalf("model fps %s after 5 keyframes, want 25", got)
	}
	time.Sleep(met.sched.window + 50*time.Millisecond) // the scene is still this long
	met.scheduled("cam", "still")
	if got := fps(); got != "0" {
		t.Fatalf("model fps %s after a window of still frames, want 0", got)
	}
}

// Between two keyframes an object pairs with the one that looks like it
// on the other side, not with whatever the tracker let its track go on
// with: here the tracker kept a confident circle's track on a background
// box that overlaps it (score 0.02) and gave the circle, 10 px on, a new
// track; and a small triangle moved more than its own size, out of its
// track's reach.
func TestPairTracksFollowsTheObjectNotTheTrack(t *testing.T) {
	circle0 := track.Predicted{Key: 1, ClassID: 0, Score: 0.9, Seen: [4]float32{181, 1, 220, 30}}
	junk1 := track.Predicted{Key: 1, ClassID: 0, Score: 0.02, Seen: [4]float32{182, 0, 214, 18}}
	circle1 := track.Predicted{Key: 7, ClassID: 0, Score: 0.41, Seen: [4]float32{177, 10, 210, 34}}
	tri0 := track.Predicted{Key: 2, ClassID: 2, Score: 0.9, Seen: [4]float32{37, 97, 47, 108}}
	big0 := track.Predicted{Key: 3, ClassID: 2, Score: 0.01, Seen: [4]float32{0, 38, 115, 161}}
	tri1 := track.Predicted{Key: 8, ClassID: 2, Score: 0.78, Seen: [4]float32{27, 90, 36, 99}}
	prev := []track.Predicted{circle0, tri0, big0}
	next := []track.Predicted{junk1, circle1, tri1}
	got := pairTracks(prev, next)
	// the circle with the circle, the triangle with the triangle; the
	// background box has nothing like it on the earlier side
	if want := []int{-1, 0, 1}; !slices.Equal(got, want) {
		t.Fatalf("pairs %v, want %v", got, want)
	}
	// a class never pairs with another, however close
	other := track.Predicted{Key: 9, ClassID: 1, Score: 0.9, Seen: circle0.Seen}
	if got := pairTracks(prev, []track.Predicted{other}); got[0] != -1 {
		t.Fatalf("a square paired with %d", got[0])
	}
}

// zigzagSource draws a textured square that goes right 4 px a frame for
// 4 frames, then left for 4, over a flat background; the frame's number
// is in its first pixels, for zigzagDetector.
type zigzagSource struct{ n int }

const zigW, zigH = 160, 96

func zigzagBox(seq int) detection.Box {
	x := 40 + 4*min(seq%8, 8-seq%8)
	return detection.Box{X1: float32(x), Y1: 40, X2: float32(x + 24), Y2: 64}
}

func (s *zigzagSource) Name() string { return "zig" }
func (s *zigzagSource) Live() bool   { return false }
func (s *zigzagSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	for i := range s.n {
		rgb := make([]byte, zigW*zigH*3)
		for p := range rgb {
			rgb[p] = 90
		}
		b := zigzagBox(i)
		for y := int(b.Y1); y < int(b.Y2); y++ {
			for x := int(b.X1); x < int(b.X2); x++ {
				dx, dy := x-int(b.X1), y-int(b.Y1)
				v := byte((dx/3*37 ^ dy/3*91) * 53)
				copy(rgb[(y*zigW+x)*3:], []byte{v, 255 - v, v / 2})
			}
		}
		rgb[0], rgb[1] = byte(i), byte(i>>8)
		f := &decode.Frame{StreamID: "zig", Seq: int64(i), PTS: time.Duration(i) * 40 * time.Millisecond,
			Width: zigW, Height: zigH, RGB: rgb, Captured: time.Now()}
		if !emit(f) {
			return nil
		}
	}
	return ctx.Err()
}

// zigzagDetector finds the square where zigzagSource drew it.
type zigzagDetector struct{}

func (zigzagDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	out := make([]cascade.Result, len(frames))
	for k, f := range frames {
		b := zigzagBox(int(f.Pix[0]) | int(f.Pix[1])<<8)
		m := detection.Mask{X: int(b.X1), Y: int(b.Y1), W: int(b.Width()), H: int(b.Height())}
		m.Bits = make([]byte, m.W*m.H)
		for i := range m.Bits {
			m.Bits[i] = 1
		}
		out[k] = cascade.Result{Width: f.Width, Height: f.Height,
			Detections: []detection.Detection{{Box: b, Score: 0.9, Label: 0, Mask: m}}}
	}
	return out, cascade.Timings{}, nil
}

// Live timing carries the tracks forward only: a square that turns
// between two keyframes runs away from the tracker's prediction, which
// only knows the velocity it had; propagation flow follows it on the
// picture.
func TestFlowFollowsWhatThePredictionCannot(t *testing.T) {
	errOf := func(prop Propagation) float64 {
		sink := &outSink{}
		err := Run(context.Background(), context.Background(), Config{
			Sources: []Source{&zigzagSource{n: 60}}, Detector: zigzagDetector{},
			Schedules: []Schedule{{Interval: 5, Timing: TimingLive, Propagation: prop}},
			Sinks:     func(string) ([]Sink, error) { return []Sink{sink}, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(sink.outs) != 60 {
			t.Fatalf("%s: %d frames out of 60", prop, len(sink.outs))
		}
		sum, n := 0.0, 0
		for _, o := range sink.outs {
			if o.Keyframe || o.Frame.Seq < 10 { // the tracker learns its velocity first
				continue
			}
			if len(o.Result.Detections) != 1 {
				t.Fatalf("%s: frame %d has %d detections", prop, o.Frame.Seq, len(o.Result.Detections))
			}
			got, want := o.Result.Detections[0].Box, zigzagBox(int(o.Frame.Seq))
			sum += math.Abs(float64(got.X1-want.X1)) + math.Abs(float64(got.Y1-want.Y1))
			n++
		}
		return sum / float64(n)
	}
	box, fl := errOf(PropagateBox), errOf(PropagateFlow)
	t.Logf("mean corner error on propagated frames: box %.2f px, flow %.2f px", box, fl)
	if fl > 1 || fl > box/2 {
		t.Fatalf("flow is %.2f px off the square, box %.2f px", fl, box)
	}
}

// shrinkSource is zigzagSource whose pictures turn smaller from frame 8
// on (an image folder's pictures may differ in size; ingest goes on).
type shrinkSource struct{ zigzagSource }

func (s *shrinkSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	return s.zigzagSource.Run(ctx, func(f *decode.Frame) bool {
		if f.Seq >= 8 {
			const w, h = 100, 50
			rgb := make([]byte, w*h*3)
			for y := range h {
				copy(rgb[y*w*3:(y+1)*w*3], f.RGB[y*zigW*3:])
			}
			f.RGB, f.Width, f.Height = rgb, w, h
		}
		return emit(f)
	})
}

// A stream's pictures may change size (an image folder): propagation
// between keyframes must not read an object's region, taken on the larger
// picture, out of the smaller one, in either mode.
func TestPropagationSurvivesAPictureThatShrinks(t *testing.T) {
	for _, prop := range []Propagation{PropagateFlow, PropagateBox} {
		t.Run(string(prop), func(t *testing.T) { propagateOnShrinkingPictures(t, prop) })
	}
}

func propagateOnShrinkingPictures(t *testing.T, prop Propagation) {
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("panic: %v", r)
		}
	}()
	sink := &outSink{}
	err := Run(context.Background(), context.Background(), Config{
		Sources: []Source{&shrinkSource{zigzagSource{n: 20}}}, Detector: zigzagDetector{},
		Schedules: []Schedule{{Interval: 5, Timing: TimingLive, Propagation: prop}},
		Sinks:     func(string) ([]Sink, error) { return []Sink{sink}, nil },
	})
	if err != nil || len(sink.outs) != 20 {
		t.Fatalf("err %v, %d frames out", err, len(sink.outs))
	}
}
