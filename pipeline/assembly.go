package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/store"
	"github.com/htcstream/htcstream/stream/encode"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/stream/web"
)

// Options are what a run takes besides its configuration.
type Options struct {
	// ORTLib is the ONNX Runtime library (default: infer.FindLibrary's search).
	ORTLib string
	// MaxFrames stops each source after this many frames (0: no limit).
	MaxFrames int
	// Stdout gets the summary, Stderr the progress line and notices.
	Stdout, Stderr io.Writer
	// Interrupt, when set, replaces SIGINT/SIGTERM: its first value drains
	// (frames in flight finish, outputs close), its second stops at once.
	Interrupt <-chan os.Signal
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Version is htcstream's, for htcstream_build_info.
	Version string
}

// ErrInterrupted is returned when an interrupt stopped the run before its
// sources ended; every output was still closed properly.
var ErrInterrupted = errors.New("interrupted")

// InterruptedError is ErrInterrupted with the signal that stopped the run,
// for the exit status (128 + its number).
type InterruptedError struct{ Signal os.Signal }

func (e *InterruptedError) Error() string {
	switch e.Signal {
	case syscall.SIGINT:
		return "interrupted (SIGINT)"
	case syscall.SIGTERM:
		return "interrupted (SIGTERM)"
	case syscall.SIGHUP:
		return "interrupted (SIGHUP: the terminal closed)"
	case nil:
		return ErrInterrupted.Error()
	}
	return fmt.Sprintf("interrupted (%v)", e.Signal)
}

func (e *InterruptedError) Unwrap() error { return ErrInterrupted }

// Execute assembles and runs `htcstream run`: the cameras' sources, the
// model (one per distinct set of test-time views, on one bundle), the
// sinks, the web server and signal handling; it returns when every source
// has ended, or after an interrupt, with every output closed.
func Execute(cfg RunConfig, opt Options) error {
	if opt.Stdout == nil {
		opt.Stdout = io.Discard
	}
	if opt.Stderr == nil {
		opt.Stderr = io.Discard
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	cams, err := cfg.Resolve()
	if err != nil {
		return err
	}
	if len(cams) == 0 {
		return fmt.Errorf("%w: no camera or source given", ErrConfig)
	}
	// Sources first: a bad URL or a missing file is reported before the
	// outputs are looked at (htcstream run nosuch.mp4 said "nothing to
	// produce" first) and before the model loads.
	parsed := make([]ingest.Source, len(cams))
	for i, cam := range cams {
		if parsed[i], err = ingest.Parse(cam.URL); err != nil {
			return fmt.Errorf("camera %s: %w", cam.Name, err)
		}
		if src := parsed[i]; src.Kind == ingest.File && !strings.Contains(src.Location, "://") {
			if _, err := os.Stat(src.Location); err != nil {
				return fmt.Errorf("camera %s: %w", cam.Name, err)
			}
		}
	}
	if cfg.Outputs.Video == "" && cfg.Outputs.Detections == "" && cfg.Outputs.Serve == "" && !camerasWrite(cams) &&
		cfg.MQTT.Broker == "" && len(cfg.Webhooks) == 0 && !cfg.Events.Store.enabled() {
		return fmt.Errorf("%w: nothing to produce: give --out, --detections and/or --serve (or a camera's outputs, or mqtt/webhooks/events.store for events)", ErrConfig)
	}
	if err := distinctOutputs(cfg, cams); err != nil {
		return err
	}
	for _, c := range cams {
		if p := videoPath(cfg, cams, c); p != "" && !strings.EqualFold(filepath.Ext(p), ".mp4") {
			return fmt.Errorf("%w: video %s: htcstream writes H.264 in .mp4 files only (got %q)", ErrConfig, p, filepath.Ext(p))
		}
	}

	if cfg.Model.Bundle == "" {
		if cfg.Model.Bundle, err = DefaultBundle(); err != nil {
			return err
		}
	}
	spec := ModelSpec{Bundle: cfg.Model.Bundle, ORTLib: opt.ORTLib, Provider: cfg.Model.Provider, Threads: cfg.Model.Threads,
		Ensemble: NewEnsemble(cfg.Model.Ensemble, cfg.Model.StageWeights),
		Stages:   cfg.Model.Stages}
	b, err := spec.OpenBundle()
	if err != nil {
		return err
	}
	defer b.Close()
	classes := b.Manifest.Things
	detectors, filters, err := camerasModels(spec, b, cams)
	if err != nil {
		return err
	}
	metrics := NewMetricsWith(MetricsConfig{Version: opt.Version, Provider: string(b.Provider()),
		Model: filepath.Base(cfg.Model.Bundle), Classes: classes})
	recs, err := newRecordings(cams, metrics, opt.Logger)
	if err != nil {
		return err
	}
	defer recs.Close() // after the sources ended: the last segments close whole
	events, err := newEventOutputs(cfg, cams, classes, metrics, opt.Logger, recs)
	if err != nil {
		return err
	}
	defer events.closeStore() // last: the web server reads it until it stops
	defer events.close()
	if events.db != nil {
		recs.toStore(events.db)
	}

	drain, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()
	var interrupted atomic.Pointer[InterruptedError]
	sig := opt.Interrupt
	if sig == nil {
		c := make(chan os.Signal, 2)
		// SIGHUP too: closing the terminal must finish the mp4 (its moov
		// is written last), not kill the run and leave a .partial.
		signal.Notify(c, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(c)
		sig = c
	}
	go func() {
		for n := 0; ; n++ {
			var got os.Signal
			select {
			case got = <-sig:
			case <-hard.Done():
				return
			}
			interrupted.CompareAndSwap(nil, &InterruptedError{Signal: got})
			if n == 0 {
				fmt.Fprintln(opt.Stderr, "htcstream: stopping: finishing the frames in flight and closing outputs (interrupt again to stop now)")
				stopDrain()
			} else {
				stopHard()
				return
			}
		}
	}()

	var hub *web.Hub
	if cfg.Outputs.Serve != "" {
		hub, err = web.NewHub(web.HubConfig{
			Encoder: previewEncoder(cfg),
			WebRTC:  web.WebRTCConfig{ICEServers: cfg.WebRTC.ICEServers, UDPPortMin: cfg.WebRTC.UDPPortMin, UDPPortMax: cfg.WebRTC.UDPPortMax},
		})
		if err != nil {
			return err
		}
		defer hub.Close()
		routes := web.Routes{Hub: hub, Metrics: metrics, Health: metrics.Health, SnapshotDir: cfg.Events.Snapshots.Dir,
			Recordings: recs.SegmentDir, Clip: recs.Clip}
		if events.db != nil {
			routes.API = store.Handler(events.db.db, opt.Logger)
		}
		srv, err := web.NewServer(cfg.serverConfig(opt.Logger), routes)
		if err != nil {
			return fmt.Errorf("%w: --serve %s: %w", ErrConfig, cfg.Outputs.Serve, err)
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("--serve %s: %w", cfg.Outputs.Serve, err)
		}
		defer srv.Close()
		fmt.Fprintf(opt.Stdout, "preview: %s  (WHEP: /whep/<camera>, metrics: /metrics)\n", srv.URL())
	}

	out, err := newOutputs(cfg, cams, b.Manifest, hub)
	if err != nil {
		return err
	}
	out.recs = recs
	sources := make([]Source, len(cams))
	schedules := make([]Schedule, len(cams))
	drawers := perStreamDrawer{}
	for i, cam := range cams {
		schedules[i] = cam.Schedule(parsed[i].Kind.Live())
		live := cam.Live
		icfg := live.ingestConfig()
		icfg.Loop = cam.Loop && !parsed[i].Kind.Live()
		if t := recs.Tap(cam.Name); t != nil {
			icfg.Tap = t
		}
		sources[i] = Limited(&IngestSource{ID: cam.Name, Source: parsed[i], Config: icfg, Metrics: metrics}, opt.MaxFrames)
		o := cam.Overlay
		drawers[cam.Name] = &OverlayDrawer{Renderer: overlay.NewRenderer(o.style(), classes), HUD: o.HUD,
			StuffTint: o.StuffTint, Stuff: b.Manifest.StuffChannels()}
	}

	var frames atomic.Int64
	progress := StartProgress(opt.Stderr, &frames, expectedFrames(cams, parsed, opt.MaxFrames))
	counted := make([]Detector, len(detectors))
	for i, d := range detectors {
		counted[i] = countingDetector{d, &frames}
	}
	err = Run(drain, hard, Config{
		Detectors:  counted,
		Filters:    filters,
		Trackers:   events.trackers,
		Schedules:  schedules,
		Sources:    sources,
		Drawer:     drawers,
		Sinks:      out.sinksFor,
		Batch:      infer.BatcherConfig{Size: cfg.Batch.Size, Deadline: cfg.Batch.Deadline},
		Metrics:    metrics,
		OnSinkDrop: metrics.sinkDropped,
		Logger:     opt.Logger,
	})
	progress()
	events.close() // the streams have ended: flush what is queued
	for _, s := range sources {
		sum := metrics.Summary(s.Name())
		damage := ""
		if sum.DecodeErrors > 0 {
			damage = fmt.Sprintf(", %d decode errors (damaged input: pictures lost or concealed)", sum.DecodeErrors)
		}
		fmt.Fprintf(opt.Stdout, "stream %s: %d frames in, %d out, %d dropped%s, %s", s.Name(), sum.In, sum.Out, sum.Dropped, damage, Rate(sum.FPS))
		if key, prop, still := metrics.ScheduleCounts(s.Name()); prop+still > 0 {
			fmt.Fprintf(opt.Stdout, "; the model ran on %d keyframes, %d frames propagated, %d still", key, prop, still)
		}
		if med, n := metrics.HandoffMedian(s.Name(), "webrtc"); n > 0 {
			fmt.Fprintf(opt.Stdout, "; capture to preview: median %d ms", med.Round(time.Millisecond).Milliseconds())
		}
		fmt.Fprintln(opt.Stdout)
	}
	out.report(opt.Stdout, interrupted.Load() != nil)
	events.report(opt.Stdout)
	if ie := interrupted.Load(); err == nil && ie != nil {
		return ie
	}
	return err
}

// camerasWrite says whether some camera has an output of its own.
func camerasWrite(cams []Camera) bool {
	for _, c := range cams {
		if c.Outputs.Video != "" || c.Outputs.Detections != "" {
			return true
		}
	}
	return false
}

// distinctOutputs refuses two outputs on one path: the second would
// silently overwrite the first.
func distinctOutputs(cfg RunConfig, cams []Camera) error {
	seen := map[string]string{}
	add := func(path, what string) error {
		if path == "" || path == "-" || path == os.DevNull {
			return nil
		}
		if prev, ok := seen[filepath.Clean(path)]; ok {
			return fmt.Errorf("%w: %s and %s are both %s", ErrConfig, prev, what, path)
		}
		seen[filepath.Clean(path)] = what
		return nil
	}
	if err := add(cfg.Outputs.Detections, "the detections"); err != nil {
		return err
	}
	for _, c := range cams {
		if err := add(videoPath(cfg, cams, c), "camera "+c.Name+"'s video"); err != nil {
			return err
		}
		if err := add(c.Outputs.Detections, "camera "+c.Name+"'s detections"); err != nil {
			return err
		}
	}
	return nil
}

// videoPath is where a camera's annotated mp4 goes: its own path, else the
// global one (NAME-<camera>.mp4 with several cameras), else nowhere.
func videoPath(cfg RunConfig, cams []Camera, c Camera) string {
	if c.Outputs.Video != "" {
		return c.Outputs.Video
	}
	p := cfg.Outputs.Video
	if p == "" || len(cams) == 1 {
		return p
	}
	ext := filepath.Ext(p)
	return strings.TrimSuffix(p, ext) + "-" + c.Name + ext
}

// camerasModels makes one cascade model per distinct test procedure among
// the cameras (views and the semantic map), all on one bundle, and each
// camera's filter. A model's threshold is the lowest any of its cameras
// asks for; the cameras' filters apply their own.
func camerasModels(spec ModelSpec, b *infer.Bundle, cams []Camera) ([]Detector, []ResultFilter, error) {
	type group struct {
		spec ModelSpec
		md   *cascade.Model
	}
	groups := map[string]*group{}
	keyOf := make([]string, len(cams))
	for i, cam := range cams {
		s := spec
		s.Scales, s.Flip, s.Semantic = cam.TTAScales, cam.Flip, cam.Overlay.StuffTint > 0
		key := fmt.Sprintf("%v/%v/%v", s.Scales, s.Flip, s.Semantic)
		keyOf[i] = key
		low := cam.ScoreThreshold
		for _, t := range cam.Thresholds {
			low = min(low, t)
		}
		if cam.Events.Enabled {
			// the tracker's second association needs the low scores
			low = min(low, float64(cam.Events.Tracker.LowScore))
		}
		if g, ok := groups[key]; ok {
			g.spec.Threshold = min(g.spec.Threshold, float32(low))
			continue
		}
		s.Threshold = float32(low)
		groups[key] = &group{spec: s}
	}
	for _, g := range groups {
		md, err := g.spec.NewModel(b)
		if err != nil {
			return nil, nil, err
		}
		g.md = md
	}
	dets := make([]Detector, len(cams))
	filters := make([]ResultFilter, len(cams))
	for i, cam := range cams {
		g := groups[keyOf[i]]
		dets[i] = g.md
		f, err := NewFilter(cam.CameraConfig, b.Manifest.Things, float64(g.spec.Threshold))
		if cam.Events.Enabled { // the tracker stage applies the camera's thresholds after tracking
			f, err = trackingFilter(cam.CameraConfig, b.Manifest.Things, float64(g.spec.Threshold), float64(cam.Events.Tracker.LowScore))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("camera %s: %w", cam.Name, err)
		}
		filters[i] = f
	}
	return dets, filters, nil
}

// countingDetector counts frames for the progress line.
type countingDetector struct {
	d Detector
	n *atomic.Int64
}

func (c countingDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	r, t, err := c.d.Detect(frames)
	c.n.Add(int64(len(frames)))
	return r, t, err
}

// perStreamDrawer draws each camera with its own overlay settings.
type perStreamDrawer map[string]Drawer

func (p perStreamDrawer) Draw(o *Output) error {
	if d := p[o.Stream]; d != nil {
		return d.Draw(o)
	}
	return nil
}

// outputs are a run's files and the preview hub, shared out to the cameras.
type outputs struct {
	cfg   RunConfig
	cams  []Camera
	sem   []string
	stuff []bool
	hub   *web.Hub
	// hubEncoder encodes the preview of every camera
	hubEncoder encode.EncoderConfig
	shared     *DetectionsSink
	written    []written
	// recs gives cameras recorded in mode annotated their record sink
	recs *recordings
}

// previewEncoder is how the WebRTC preview of every camera is encoded.
func previewEncoder(cfg RunConfig) encode.EncoderConfig {
	return encode.EncoderConfig{Codec: encode.Codec(cfg.WebRTC.Codec)}
}

// written is an output file the run opened: what it holds and where.
type written struct{ what, path string }

func newOutputs(cfg RunConfig, cams []Camera, m *infer.Manifest, hub *web.Hub) (*outputs, error) {
	o := &outputs{cfg: cfg, cams: cams, sem: m.SemanticClasses(), stuff: m.StuffChannels(), hub: hub, hubEncoder: previewEncoder(cfg)}
	if cfg.Outputs.Detections != "" {
		js, err := record.NewJSONSink(cfg.Outputs.Detections)
		if err != nil {
			return nil, err
		}
		o.shared = o.detectionsSink(js)
		o.written = append(o.written, written{"detections", cfg.Outputs.Detections})
	}
	return o, nil
}

func (o *outputs) detectionsSink(js *record.JSONSink) *DetectionsSink {
	return &DetectionsSink{S: js, SemanticClasses: o.sem, Stuff: o.stuff}
}

// sinksFor is Config.Sinks: a camera's video, detections and preview.
func (o *outputs) sinksFor(name string) ([]Sink, error) {
	var cam Camera
	for _, c := range o.cams {
		if c.Name == name {
			cam = c
		}
	}
	var ss []Sink
	if p := videoPath(o.cfg, o.cams, cam); p != "" {
		fsink, err := encode.NewFileSink(p, encode.EncoderConfig{})
		if err != nil {
			return nil, err
		}
		o.written = append(o.written, written{"video", p})
		ss = append(ss, &FileSink{S: fsink})
	}
	if o.shared != nil {
		ss = append(ss, o.shared.For())
	}
	if p := cam.Outputs.Detections; p != "" {
		js, err := record.NewJSONSink(p)
		if err != nil {
			return nil, err
		}
		o.written = append(o.written, written{"detections", p})
		ss = append(ss, o.detectionsSink(js).For())
	}
	if o.hub != nil && cam.Outputs.Serve {
		// The stream is there before its first frame: a viewer that
		// connects while the camera is still opening sees it from the
		// start.
		if err := o.hub.AddStream(name, o.hubEncoder); err != nil {
			return nil, err
		}
		ss = append(ss, &HubSink{Hub: o.hub, ID: name})
	}
	if r := o.recs.Annotated(name); r != nil {
		ss = append(ss, &RecordSink{R: r})
	}
	return ss, nil
}

// report lists what was written; after an interrupt it says the files end
// early (they are complete and playable, but not the whole input). A
// video that got no frame is not left on disk (encode.ErrNoFrames), and
// the summary says so rather than naming a file that is not there.
func (o *outputs) report(w io.Writer, interrupted bool) {
	for _, f := range o.written {
		if f.what == "video" {
			if _, err := os.Stat(f.path); err != nil {
				fmt.Fprintf(w, "video: none written (no frame reached %s)\n", f.path)
				continue
			}
		}
		line := f.what + ": " + f.path
		if interrupted {
			line += " (interrupted: ends early)"
		}
		fmt.Fprintln(w, line)
	}
}

// Limited stops a source after n frames (n <= 0: no limit).
func Limited(s Source, n int) Source {
	if n <= 0 {
		return s
	}
	return limitedSource{s, n}
}

type limitedSource struct {
	Source
	n int
}

func (l limitedSource) Run(ctx context.Context, emit func(*decode.Frame) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := 0
	err := l.Source.Run(ctx, func(f *decode.Frame) bool {
		if seen >= l.n {
			cancel()
			return false
		}
		seen++
		return emit(f)
	})
	if errors.Is(err, context.Canceled) && seen >= l.n {
		return nil
	}
	return err
}

// expectedFrames is how many frames the run will process when every source
// is a local file read once (0: unknown: live sources, loops, files over
// HTTP, which are not opened a second time just to count them).
func expectedFrames(cams []Camera, parsed []ingest.Source, maxFrames int) int64 {
	var total int64
	for i, src := range parsed {
		if cams[i].Loop || src.Kind != ingest.File || strings.Contains(src.Location, "://") {
			return 0
		}
		d, err := decode.Open(src.Location, decode.Options{})
		if err != nil {
			return 0
		}
		n := d.FrameCount()
		d.Close()
		if n <= 0 {
			return 0
		}
		if maxFrames > 0 {
			n = min(n, int64(maxFrames))
		}
		total += n
	}
	return total
}
