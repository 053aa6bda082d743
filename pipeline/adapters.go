package pipeline

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/stream/encode"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/stream/web"
)

// OverlayDrawer draws results with an overlay.Renderer and a HUD showing the
// stream's name, output rate and capture-to-draw latency.
type OverlayDrawer struct {
	Renderer *overlay.Renderer
	// HUD turns the status line on.
	HUD bool
	// StuffTint is the opacity of the stuff-class tint drawn from a
	// result's semantic map (0: none); Stuff says, per semantic channel,
	// whether it is stuff (infer.Manifest.StuffChannels).
	StuffTint float32
	Stuff     []bool

	mu   sync.Mutex
	last map[string]hudState
}

type hudState struct {
	at time.Time
	dt float64 // smoothed seconds between frames
}

// Draw implements Drawer.
func (d *OverlayDrawer) Draw(o *Output) error {
	f := o.Frame
	if d.StuffTint > 0 && o.Result.Semantic != nil {
		if err := overlay.TintStuff(f.RGB, f.Width, f.Height, o.Result.Semantic, d.Stuff, d.StuffTint); err != nil {
			return err
		}
	}
	var hud *overlay.HUD
	if d.HUD {
		hud = &overlay.HUD{Stream: o.Stream, FPS: d.rate(o.Stream, time.Now()), Latency: time.Since(f.Captured)}
	}
	return d.Renderer.Draw(f.RGB, f.Width, f.Height, o.Result.Detections, hud)
}

// rate is a stream's outputs a second, from the exponentially smoothed
// time between them. Smoothing the rate itself would let the bursts of a
// loaded machine (frames 1 ms apart: "1000 fps") outweigh the gaps, and a
// 25 fps camera read 118 fps.
func (d *OverlayDrawer) rate(name string, now time.Time) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last = map[string]hudState{}
	}
	s := d.last[name]
	if !s.at.IsZero() {
		if dt := now.Sub(s.at).Seconds(); s.dt == 0 {
			s.dt = dt
		} else {
			s.dt = 0.9*s.dt + 0.1*dt
		}
	}
	s.at = now
	d.last[name] = s
	if s.dt <= 0 {
		return 0
	}
	return 1 / s.dt
}

// FileSink records one stream's annotated frames as H.264 mp4.
type FileSink struct {
	S *encode.FileSink
	held
}

// held keeps, for htcstream_frame_latency_seconds, the frames an encoder
// with lookahead holds until their packets are written: by pts, which the
// encoder's OnWritten gives back as it was given.
type held struct {
	handoff HandoffFunc
	frames  map[time.Duration]heldFrame
	// closing: the flush at Close is the run's end, not the stream's pace
	closing bool
}

type heldFrame struct {
	captured time.Time
	kind     string
}

func (h *held) start(f HandoffFunc) {
	h.handoff, h.frames = f, map[time.Duration]heldFrame{}
}

func (h *held) add(o *Output) {
	if h.handoff != nil {
		h.frames[o.Frame.PTS] = heldFrame{o.Frame.Captured, o.Kind()}
	}
}

func (h *held) written(pts time.Duration) {
	f, ok := h.frames[pts]
	if !ok {
		return // a pts the encoder moved (not after the one before)
	}
	delete(h.frames, pts)
	if !h.closing {
		h.handoff(f.captured, f.kind)
	}
}

// SinkName implements NamedSink.
func (*FileSink) SinkName() string { return "video" }

// Handoff implements EncodingSink: a frame is handed on when its packet
// goes to the mp4 muxer, some frames after Write (x264's lookahead).
func (s *FileSink) Handoff(f HandoffFunc) {
	s.start(f)
	s.S.OnWritten(s.written)
}

// Write implements Sink.
func (s *FileSink) Write(o *Output) error {
	s.add(o)
	return s.S.WriteFrame(o.Frame.Width, o.Frame.Height, o.Frame.RGB, o.Frame.PTS)
}

// Close implements Sink; a file that received no frame is not an error of
// the run (its source ended before producing any, which that source
// reports itself).
func (s *FileSink) Close() error {
	s.closing = true
	if err := s.S.Close(); err != nil && !errors.Is(err, encode.ErrNoFrames) {
		return err
	}
	return nil
}

// DetectionsSink writes every stream's detections to one JSON-lines file.
// Close closes the file once all streams sharing it have closed.
type DetectionsSink struct {
	S *record.JSONSink
	// SemanticClasses and Stuff name each semantic channel and say whether
	// it is stuff (infer.Manifest.SemanticClasses / StuffChannels): with
	// them, a result's semantic map becomes the line's stuff regions.
	SemanticClasses []string
	Stuff           []bool

	mu    sync.Mutex
	users int
}

// For returns the sink of one stream; call it once per stream.
func (s *DetectionsSink) For() Sink {
	s.mu.Lock()
	s.users++
	s.mu.Unlock()
	return detectionsUser{s}
}

type detectionsUser struct{ s *DetectionsSink }

func (detectionsUser) SinkName() string { return "detections" }

func (u detectionsUser) Write(o *Output) error {
	fd := record.FrameDetections{Stream: o.Stream, Seq: o.Frame.Seq, PTS: o.Frame.PTS, Time: o.Frame.Captured, File: o.Frame.Name,
		Width: o.Frame.Width, Height: o.Frame.Height, Keyframe: o.Keyframe, Detections: o.Result.Detections}
	if o.Keyframe {
		fd.Model = &record.ModelRun{Why: string(o.Why), Run: o.ModelRun}
		if o.ModelRun > 0 {
			w := o.Waited
			fd.Model.Waited = &w
		}
	}
	if o.Result.Semantic != nil && u.s.Stuff != nil {
		fd.Stuff = StuffRegions(o.Result.Semantic, u.s.SemanticClasses, u.s.Stuff, MinStuffArea)
	}
	return u.s.S.Write(fd)
}

// MinStuffArea is the smallest share of a frame a stuff region needs to be
// listed in the detections: below 1% a label is mostly the semantic map's
// noise at object borders.
const MinStuffArea = 0.01

// StuffRegions counts the stuff labels of a semantic map (one label a
// pixel) and returns those covering at least minArea of it, largest first
// (ties by channel). Labels without a name or beyond stuff are skipped.
func StuffRegions(labels []uint8, names []string, stuff []bool, minArea float32) []record.Region {
	var counts [256]int
	for _, l := range labels {
		counts[l]++
	}
	out := []record.Region{}
	if len(labels) == 0 {
		return out
	}
	for c, n := range counts {
		if n == 0 || c >= len(stuff) || !stuff[c] || c >= len(names) {
			continue
		}
		if a := float32(n) / float32(len(labels)); a >= minArea {
			out = append(out, record.Region{Label: names[c], ClassID: c, Area: a})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Area > out[j].Area })
	return out
}

func (u detectionsUser) Close() error {
	u.s.mu.Lock()
	u.s.users--
	last := u.s.users == 0
	u.s.mu.Unlock()
	if last {
		return u.s.S.Close()
	}
	return nil
}

// HubSink publishes one stream's annotated frames and detection summaries
// to the WebRTC hub (browsers watching through WHEP).
type HubSink struct {
	Hub *web.Hub
	ID  string

	handoff HandoffFunc
}

// SinkName implements NamedSink.
func (*HubSink) SinkName() string { return "webrtc" }

// Handoff implements EncodingSink: a frame is handed on when the hub has
// encoded it and queued it for the viewers' tracks; while nobody watches
// nothing is encoded, and nothing is reported.
func (s *HubSink) Handoff(f HandoffFunc) { s.handoff = f }

// Write implements Sink.
func (s *HubSink) Write(o *Output) error {
	f := o.Frame
	sum := web.Summarize(o.Result.Detections)
	key := o.Keyframe
	sum.Keyframe, sum.Still = &key, o.Still
	watched, err := s.Hub.PublishWatched(o.Stream, f.Width, f.Height, f.RGB, f.PTS, sum)
	if watched && s.handoff != nil {
		s.handoff(f.Captured, o.Kind())
	}
	return err
}

// Close implements Sink: the stream leaves the hub; the hub itself is closed
// by its owner.
func (s *HubSink) Close() error {
	s.Hub.RemoveStream(s.ID)
	return nil
}

// IngestSource runs an ingest.Runner as a pipeline Source. The runner owns
// the stream's clock (name, seq, pts, looping with Config.Loop): nothing
// here rewrites a frame.
type IngestSource struct {
	ID     string
	Source ingest.Source
	Config ingest.Config
	// Metrics, when set, hears the source's states and reconnects
	// (Config.OnState still hears them too).
	Metrics *Metrics
}

// Name implements Source.
func (s *IngestSource) Name() string { return s.ID }

// Live implements Source.
func (s *IngestSource) Live() bool { return s.Source.Kind.Live() }

// Run implements Source.
func (s *IngestSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	cfg := s.Config
	cfg.StreamID = s.ID
	cfg.OnState = s.Metrics.IngestHook(s.ID, cfg.OnState)
	s.Metrics.SetOpenTimeout(s.ID, cfg.OpenTimeout)
	r, err := ingest.NewRunner(s.Source, cfg)
	if err != nil {
		return err
	}
	var counted int64 // decode errors passed on to the metrics
	countErrors := func() {
		if e := r.DecodeErrors(); e > counted {
			s.Metrics.DecodeErrors(s.ID, e-counted)
			counted = e
		}
	}
	defer countErrors()
	err = r.Run(ctx, func(f *decode.Frame) error {
		countErrors()
		if !emit(f) {
			return ingest.ErrStop // a normal end, no error in the log
		}
		return nil
	})
	if errors.Is(err, ingest.ErrStop) {
		return nil
	}
	return err
}

// RecordSink records a camera's frames as drawn into its recording
// segments (record mode annotated). The run's recordings close the segment
// in progress after the last frame.
type RecordSink struct {
	R *record.Recorder
	held
}

// SinkName implements NamedSink.
func (*RecordSink) SinkName() string { return "record" }

// Handoff implements EncodingSink: a frame is handed on when its packet
// goes into the segment, some frames after Write (the encoder's
// lookahead).
func (s *RecordSink) Handoff(f HandoffFunc) {
	s.start(f)
	s.R.OnWritten(s.written)
}

// Write implements Sink.
func (s *RecordSink) Write(o *Output) error {
	s.add(o)
	return s.R.WriteFrame(o.Frame.Width, o.Frame.Height, o.Frame.RGB, o.Frame.PTS)
}

// Close implements Sink; the run's recordings close the segment in
// progress afterwards, and its last frames are not timed.
func (s *RecordSink) Close() error {
	s.closing = true
	return nil
}
