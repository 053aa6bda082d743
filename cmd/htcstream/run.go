package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/pipeline"
	"github.com/htcstream/htcstream/stream"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [flags] SOURCE...", stderr)
	configPath := fs.String("config", "", "YAML configuration (see configs/pipeline/default.yaml); flags override it")
	def := pipeline.DefaultRunConfig()
	var mf modelFlags
	mf.register(fs, def.Model.ScoreThreshold)
	batch := fs.Int("batch", def.Batch.Size, "frames per inference batch, shared by all streams")
	batchWait := fs.Duration("batch-wait", def.Batch.Deadline, "longest wait for a batch to fill")
	out := fs.String("out", "", "write the annotated video here (mp4; NAME-<stream>.mp4 with several sources)")
	dets := fs.String("detections", "", "write detections here as JSON lines")
	serve := fs.String("serve", "", "serve the browser preview, WHEP and /metrics on this address (e.g. 127.0.0.1:8080)")
	loop := fs.Bool("loop", def.Loop, "start file sources again at their end, to keep a preview serving")
	codec := fs.String("codec", def.WebRTC.Codec, "browser preview codec: h264 or vp8")
	stuff := fs.Float64("stuff-tint", float64(def.Overlay.StuffTint), "tint stuff regions (sky, grass...) from the semantic branch at this opacity (0: off)")
	transport := fs.String("rtsp-transport", def.Live.Transport, "RTSP transport: tcp or udp")
	hwDecode := fs.String("hw-decode", def.Live.HWDecode, "hardware decoding: cuda or vaapi (falls back to software with a log line)")
	maxFrames := fs.Int("max-frames", 0, "stop each source after this many frames (0: no limit)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := def
	if *configPath != "" {
		var err error
		if cfg, err = pipeline.LoadRunConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, apply func()) {
		if set[name] {
			apply()
		}
	}
	override("model", func() { cfg.Model.Bundle = mf.bundle })
	override("provider", func() { cfg.Model.Provider = mf.provider })
	override("threads", func() { cfg.Model.Threads = mf.threads })
	override("flip", func() { cfg.Model.Flip = mf.flip })
	override("ensemble", func() { cfg.Model.Ensemble = mf.ensemble })
	override("score-threshold", func() { cfg.Model.ScoreThreshold = mf.threshold })
	override("batch", func() { cfg.Batch.Size = *batch })
	override("batch-wait", func() { cfg.Batch.Deadline = *batchWait })
	override("out", func() { cfg.Outputs.Video = *out })
	override("detections", func() { cfg.Outputs.Detections = *dets })
	override("serve", func() { cfg.Outputs.Serve = *serve })
	override("loop", func() { cfg.Loop = *loop })
	override("codec", func() { cfg.WebRTC.Codec = *codec })
	override("stuff-tint", func() { cfg.Overlay.StuffTint = float32(*stuff) })
	override("rtsp-transport", func() { cfg.Live.Transport = *transport })
	override("hw-decode", func() { cfg.Live.HWDecode = *hwDecode })
	if set["stage-weights"] || set["tta"] {
		spec, err := mf.spec()
		if err != nil {
			return err
		}
		if set["stage-weights"] {
			cfg.Model.StageWeights = spec.ensemble.Weights
		}
		if set["tta"] {
			cfg.Model.TTAScales = nil
			for _, sc := range spec.scales {
				cfg.Model.TTAScales = append(cfg.Model.TTAScales, [2]int{sc.Long, sc.Short})
			}
		}
	}
	cfg.Sources = append(cfg.Sources, fs.Args()...)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if len(cfg.Sources) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: no SOURCE given", errUsage)
	}
	if cfg.Outputs.Video == "" && cfg.Outputs.Detections == "" && cfg.Outputs.Serve == "" {
		return fmt.Errorf("%w: nothing to produce: give --out, --detections and/or --serve", errUsage)
	}
	return runPipeline(cfg, mf.ortLib, *maxFrames, stdout, stderr)
}

func runPipeline(cfg pipeline.RunConfig, ortLib string, maxFrames int, stdout, stderr io.Writer) error {
	// Sources first: a bad URL is reported before the model loads.
	var sources []pipeline.Source
	names := map[string]bool{}
	for _, raw := range cfg.Sources {
		src, err := ingest.Parse(raw)
		if err != nil {
			return err
		}
		id := streamName(raw, names)
		s := &pipeline.IngestSource{ID: id, Source: src, Loop: cfg.Loop && !src.Kind.Live(), Config: ingest.Config{
			HWDecode: cfg.Live.HWDecode, Transport: cfg.Live.Transport, OpenTimeout: cfg.Live.OpenTimeout, ReadTimeout: cfg.Live.ReadTimeout,
			MaxBackoff: cfg.Live.MaxBackoff,
		}}
		sources = append(sources, limited(s, maxFrames))
	}

	spec := modelSpec{bundle: cfg.Model.Bundle, ortLib: ortLib, provider: cfg.Model.Provider, threads: cfg.Model.Threads,
		flip: cfg.Model.Flip, ensemble: cascade.Ensemble{Mode: cascade.EnsembleMode(cfg.Model.Ensemble), Weights: cfg.Model.StageWeights},
		threshold: float32(cfg.Model.ScoreThreshold), semantic: cfg.Overlay.StuffTint > 0}
	for _, s := range cfg.Model.TTAScales {
		spec.scales = append(spec.scales, infer.Scale{Long: max(s[0], s[1]), Short: min(s[0], s[1])})
	}
	b, md, err := spec.load()
	if err != nil {
		return err
	}
	defer b.Close()
	classes := b.Manifest.Things
	metrics := pipeline.NewMetrics(string(b.Provider()))

	drain, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	hard, stopHard := context.WithCancel(context.Background())
	defer stopHard()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		for n := 0; ; n++ {
			select {
			case <-sig:
			case <-hard.Done():
				return
			}
			if n == 0 {
				fmt.Fprintln(stderr, "htcstream: stopping: finishing the frames in flight and closing outputs (interrupt again to stop now)")
				stopDrain()
			} else {
				stopHard()
				return
			}
		}
	}()

	var hub *stream.Hub
	if cfg.Outputs.Serve != "" {
		hub, err = stream.NewHub(stream.HubConfig{
			Addr:    cfg.Outputs.Serve,
			Encoder: stream.EncoderConfig{Codec: stream.Codec(cfg.WebRTC.Codec)},
			WebRTC:  stream.WebRTCConfig{ICEServers: cfg.WebRTC.ICEServers, UDPPortMin: cfg.WebRTC.UDPPortMin, UDPPortMax: cfg.WebRTC.UDPPortMax},
		})
		if err != nil {
			return err
		}
		defer hub.Close()
		l, err := net.Listen("tcp", cfg.Outputs.Serve)
		if err != nil {
			return fmt.Errorf("--serve %s: %w", cfg.Outputs.Serve, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics)
		mux.Handle("/", hub)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l)
		defer srv.Close()
		fmt.Fprintf(stdout, "preview: http://%s/  (WHEP: /whep/<stream>, metrics: /metrics)\n", l.Addr())
	}

	var detSink *pipeline.DetectionsSink
	if cfg.Outputs.Detections != "" {
		js, err := stream.NewJSONSink(cfg.Outputs.Detections)
		if err != nil {
			return err
		}
		detSink = &pipeline.DetectionsSink{S: js, Classes: classes,
			SemanticClasses: b.Manifest.SemanticClasses(), Stuff: b.Manifest.StuffChannels()}
	}
	var videoPaths []string
	sinks := func(id string) ([]pipeline.Sink, error) {
		var ss []pipeline.Sink
		if cfg.Outputs.Video != "" {
			path := cfg.Outputs.Video
			if len(sources) > 1 {
				ext := filepath.Ext(path)
				path = strings.TrimSuffix(path, ext) + "-" + id + ext
			}
			fsink, err := stream.NewFileSink(path, stream.FileSinkConfig{})
			if err != nil {
				return nil, err
			}
			videoPaths = append(videoPaths, path)
			ss = append(ss, pipeline.FileSink{S: fsink})
		}
		if detSink != nil {
			ss = append(ss, detSink.For())
		}
		if hub != nil {
			ss = append(ss, pipeline.HubSink{Hub: hub, ID: id, Classes: classes})
		}
		return ss, nil
	}
	style := overlay.Style{Alpha: cfg.Overlay.Alpha, ColorBy: overlay.ColorBy(cfg.Overlay.ColorBy), Contour: cfg.Overlay.Contour,
		Boxes: cfg.Overlay.Boxes, Labels: cfg.Overlay.Labels, HUD: cfg.Overlay.HUD}
	var frames atomic.Int64
	progress := startProgress(stderr, &frames, expectedFrames(cfg, maxFrames))
	start := time.Now()
	err = pipeline.Run(drain, hard, pipeline.Config{
		Sources:  sources,
		Detector: countingDetector{md, &frames},
		Drawer: &pipeline.OverlayDrawer{Renderer: overlay.NewRenderer(style, classes), HUD: cfg.Overlay.HUD,
			StuffTint: cfg.Overlay.StuffTint, Stuff: b.Manifest.StuffChannels()},
		Sinks:   sinks,
		Batch:   infer.BatcherConfig{Size: cfg.Batch.Size, Deadline: cfg.Batch.Deadline},
		Metrics: metrics,
		Logger:  slog.Default(),
	})
	progress()
	elapsed := time.Since(start)
	for _, s := range sources {
		in, outN, dropped := metrics.Snapshot(s.Name())
		fmt.Fprintf(stdout, "stream %s: %d frames in, %d out, %d dropped, %.1f fps\n", s.Name(), in, outN, dropped, float64(outN)/elapsed.Seconds())
	}
	for _, p := range videoPaths {
		fmt.Fprintf(stdout, "video: %s\n", p)
	}
	if cfg.Outputs.Detections != "" {
		fmt.Fprintf(stdout, "detections: %s\n", cfg.Outputs.Detections)
	}
	return err
}

// countingDetector counts frames for the progress line.
type countingDetector struct {
	md *cascade.Model
	n  *atomic.Int64
}

func (c countingDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	r, t, err := c.md.Detect(frames)
	c.n.Add(int64(len(frames)))
	return r, t, err
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// streamName derives a short, URL-safe, unique stream name from a source.
func streamName(raw string, taken map[string]bool) string {
	base := raw
	if i := strings.LastIndexAny(base, "/\\"); i >= 0 && i < len(base)-1 {
		base = base[i+1:]
	}
	base = strings.TrimSuffix(base, filepath.Ext(base))
	base = strings.Trim(unsafeName.ReplaceAllString(base, "-"), "-")
	if base == "" {
		base = "stream"
	}
	name := base
	for n := 2; taken[name]; n++ {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	taken[name] = true
	return name
}

// limitedSource stops a source after n frames.
type limitedSource struct {
	pipeline.Source
	n int
}

func limited(s pipeline.Source, n int) pipeline.Source {
	if n <= 0 {
		return s
	}
	return limitedSource{s, n}
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
// is a file read once (0: unknown — live sources, loops), for the progress
// line's ETA.
func expectedFrames(cfg pipeline.RunConfig, maxFrames int) int64 {
	if cfg.Loop {
		return 0
	}
	var total int64
	for _, raw := range cfg.Sources {
		src, err := ingest.Parse(raw)
		// A file over HTTP is not opened a second time just to count it: a
		// slow server would hold up the start.
		if err != nil || src.Kind != ingest.File || strings.Contains(src.Location, "://") {
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

// startProgress prints a progress line (with an ETA when the total is
// known) on stderr while a terminal watches, and returns a function that
// ends it.
func startProgress(w io.Writer, frames *atomic.Int64, total int64) func() {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				n := frames.Load()
				el := time.Since(start)
				fps := float64(n) / el.Seconds()
				if total > 0 && n > 0 {
					eta := time.Duration(float64(total-n) / fps * float64(time.Second)).Round(time.Second)
					fmt.Fprintf(w, "\r\033[K%s %d/%d frames, %.1f fps, %s elapsed, ETA %s", bar(n, total), n, total, fps, el.Round(time.Second), max(eta, 0))
				} else {
					fmt.Fprintf(w, "\r\033[K%d frames, %.1f fps, %s elapsed", n, fps, el.Round(time.Second))
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// bar draws a 20-character progress bar.
func bar(n, total int64) string {
	full := int(min(n, total) * 20 / total)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", 20-full) + "]"
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
