package pipeline

import (
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/stream/web"
)

// SourceStates are the states htcstream_source_state reports, one 0/1
// series each per camera: ingest.State's names, idle left out (a source is
// connecting as soon as the run starts).
var SourceStates = []string{
	ingest.StateConnecting.String(),
	ingest.StateLive.String(),
	ingest.StateRetrying.String(),
	ingest.StateEnded.String(),
	ingest.StateFailed.String(),
}

// MetricsConfig describes the run for htcstream_build_info and names the
// labels of the detections. Every field is optional.
type MetricsConfig struct {
	// Version is htcstream's version; default: the main module's version
	// from the binary's build info, "devel" without one.
	Version string
	// Provider is the execution provider the model runs on ("cpu", "cuda",
	// "tensorrt"); default "unknown".
	Provider string
	// Model names the model bundle (e.g. its folder name); default "".
	Model string
	// Classes are the model's thing class names, the label of
	// htcstream_detections_total; a class beyond them is "class N".
	// Default none.
	Classes []string
}

// Metrics counts what the pipeline does and serves it in Prometheus' text
// format (github.com/prometheus/client_golang, on a registry of its own
// with the process_ and go_ collectors). All methods are safe for
// concurrent use and do nothing on a nil *Metrics, so stages need not
// check.
//
// Series (every per-stream one labelled camera):
//
//	htcstream_build_info{version,goversion,provider,model}  1
//	htcstream_frames_in_total, _frames_out_total, _frames_dropped_total
//	htcstream_decode_errors_total{camera}  damaged packets and pictures
//	htcstream_source_state{camera,state}  1 for the current state, 0 for the others
//	htcstream_reconnects_total{camera}
//	htcstream_detections_total{camera,label}
//	htcstream_sink_dropped_total{camera,sink}
//	htcstream_latency_seconds{camera}  histogram, capture to drawn
//	htcstream_frame_latency_seconds{camera,output,kind}  histogram, capture to the encoded picture handed on
//	  (output video: into the mp4; record: into the annotated recording's segment; webrtc: to the viewers' tracks,
//	  while someone watches); kind as in _schedule_frames_total
//	htcstream_stage_seconds{stage}, htcstream_batch_size  histograms
//	htcstream_events_total{camera,type}  events made (new, update, end)
//	htcstream_schedule_frames_total{camera,kind}  keyframe, propagated, still (model skipped: no motion)
//	htcstream_keyframes_total{camera,why}  motion, moving, refresh, interval (why the model ran)
//	htcstream_model_wait_seconds{camera,why}  histogram, a keyframe's wait in the model's queue
//	htcstream_model_fps{camera}  keyframes a second over the last 10 s; htcstream_motion{camera}  1 while something moves
//	htcstream_snapshots_total{camera,result}  saved, failed, skipped (worker behind)
//	htcstream_snapshot_files, htcstream_snapshot_bytes  kept on disk
//	htcstream_mqtt_published_total, _dropped_total, _errors_total; htcstream_mqtt_connected, _queued
//	htcstream_webhook_published_total{webhook}, _dropped_total, _failed_total, _errors_total; _queued
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	classes []string

	mu      sync.Mutex
	streams map[string]*streamMetrics

	latency    *prometheus.HistogramVec
	handoff    *prometheus.HistogramVec
	stages     *prometheus.HistogramVec
	batches    prometheus.Histogram
	detections *prometheus.CounterVec
	reconnects *prometheus.CounterVec
	sinkDrops  *prometheus.CounterVec
	events     *prometheus.CounterVec
	snapshots  *prometheus.CounterVec
	sched      *schedMetrics
}

type streamMetrics struct {
	in, out, dropped atomic.Uint64
	decodeErrors     atomic.Uint64
	state            atomic.Value // string
	lastErr          atomic.Value // string: why the source last retried or failed
	// attempt is the state's attempt (ingest.Event.Attempt) and since
	// when the stream is in it (unix ns), for /healthz's verdict on
	// connecting; openTimeout bounds a healthy first attempt.
	attempt     atomic.Int64
	since       atomic.Int64
	openTimeout atomic.Int64
	// firstIn and lastOut (unix ns) time the frames for the summary's
	// rate, without the waits of starting and shutting down.
	firstIn, lastOut atomic.Int64
}

// NewMetrics returns empty metrics; provider names the execution provider
// the model runs on. It is NewMetricsWith(MetricsConfig{Provider: provider}).
func NewMetrics(provider string) *Metrics {
	return NewMetricsWith(MetricsConfig{Provider: provider})
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// handoffBuckets are finer around the 100 ms a live preview aims below, so
// a median read from them is good to 10 ms.
var handoffBuckets = []float64{.01, .02, .03, .04, .05, .06, .07, .08, .09, .1, .125, .15, .2, .3, .5, 1, 2, 5}

// NewMetricsWith returns empty metrics describing the run as cfg says.
func NewMetricsWith(cfg MetricsConfig) *Metrics {
	if cfg.Version == "" {
		cfg.Version = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			cfg.Version = bi.Main.Version
		}
	}
	if cfg.Provider == "" {
		cfg.Provider = "unknown"
	}
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		classes: append([]string(nil), cfg.Classes...),
		streams: map[string]*streamMetrics{},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "htcstream_latency_seconds", Help: "Capture-to-drawn latency of frames.", Buckets: latencyBuckets,
		}, []string{"camera"}),
		handoff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "htcstream_frame_latency_seconds",
			Help:    "From a frame's capture (its packet read from the camera's stream) to its encoded picture handed on: into the mp4 (output video) or the annotated recording (record), to the WebRTC viewers' tracks (output webrtc, only while someone watches); kind: keyframe, propagated, still.",
			Buckets: handoffBuckets,
		}, []string{"camera", "output", "kind"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "htcstream_stage_seconds", Help: "Time per batch (per frame for draw) in each step.", Buckets: latencyBuckets,
		}, []string{"stage"}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "htcstream_batch_size", Help: "Frames per inference batch.", Buckets: []float64{1, 2, 4, 8, 16, 32},
		}),
		detections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_detections_total", Help: "Instances detected, by camera and class.",
		}, []string{"camera", "label"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_reconnects_total", Help: "Attempts to reconnect a live source after it dropped or failed to open.",
		}, []string{"camera"}),
		sinkDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_sink_dropped_total", Help: "Frames a sink's queue was too full to take (live sources).",
		}, []string{"camera", "sink"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_events_total", Help: "Track events made, by camera and type (new, update, end).",
		}, []string{"camera", "type"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_snapshots_total", Help: "Event snapshots by result: saved, failed, skipped (the event worker was behind).",
		}, []string{"camera", "result"}),
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "htcstream_build_info", Help: "htcstream's version and the run's execution provider and model; always 1.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": goVersion(), "provider": cfg.Provider, "model": cfg.Model},
	})
	info.Set(1)
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		info, m.latency, m.handoff, m.stages, m.batches, m.detections, m.reconnects, m.sinkDrops,
		m.events, m.snapshots, streamCollector{m},
	)
	m.sched = newSchedMetrics(m.reg)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}

// Registry is the metrics' own registry, for other parts of the run to
// register their collectors on.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// stream returns a stream's counters, making them (state connecting, every
// per-camera series at 0) on first use.
func (m *Metrics) stream(name string) *streamMetrics {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.streams[name]
	if s == nil {
		s = &streamMetrics{}
		s.state.Store(ingest.StateConnecting.String())
		s.since.Store(time.Now().UnixNano())
		s.openTimeout.Store(int64(ingest.DefaultOpenTimeout))
		m.streams[name] = s
		m.reconnects.WithLabelValues(name)
		m.latency.WithLabelValues(name)
	}
	return s
}

func (m *Metrics) frameIn(name string) {
	if s := m.stream(name); s != nil {
		s.in.Add(1)
		s.firstIn.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func (m *Metrics) frameDropped(name string) {
	if s := m.stream(name); s != nil {
		s.dropped.Add(1)
	}
}

func (m *Metrics) frameOut(name string, latency time.Duration) {
	if s := m.stream(name); s != nil {
		s.out.Add(1)
		s.lastOut.Store(time.Now().UnixNano())
		m.latency.WithLabelValues(name).Observe(latency.Seconds())
	}
}

// handedOff times a frame from capture to its encoded picture leaving
// the sink output (EncodingSink).
func (m *Metrics) handedOff(camera, output, kind string, d time.Duration) {
	if m == nil {
		return
	}
	m.handoff.WithLabelValues(camera, output, kind).Observe(d.Seconds())
}

// HandoffMedian is the median of a camera's htcstream_frame_latency_seconds
// for one output ("webrtc", "video"), every kind together, read from the
// buckets as Prometheus' histogram_quantile reads them (linearly within
// the bucket that holds it); n is the frames timed, 0 when none were.
func (m *Metrics) HandoffMedian(camera, output string) (median time.Duration, n uint64) {
	if m == nil {
		return 0, 0
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		return 0, 0
	}
	cum := make([]uint64, len(handoffBuckets))
	for _, mf := range mfs {
		if mf.GetName() != "htcstream_frame_latency_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["camera"] != camera || labels["output"] != output {
				continue
			}
			h := mt.GetHistogram()
			n += h.GetSampleCount()
			for i, b := range h.GetBucket() {
				if i < len(cum) {
					cum[i] += b.GetCumulativeCount()
				}
			}
		}
	}
	if n == 0 {
		return 0, 0
	}
	half := float64(n) / 2
	lo, below := 0.0, 0.0
	for i, c := range cum {
		if float64(c) >= half {
			v := lo + (handoffBuckets[i]-lo)*(half-below)/(float64(c)-below)
			return time.Duration(v * float64(time.Second)), n
		}
		lo, below = handoffBuckets[i], float64(c)
	}
	// beyond the last bucket: say at least that much
	return time.Duration(lo * float64(time.Second)), n
}

// SourceState records a source's state: one of SourceStates (a state not
// among them shows as 0 in every series).
func (m *Metrics) SourceState(name, state string) {
	if s := m.stream(name); s != nil {
		if s.state.Swap(state) != state {
			s.since.Store(time.Now().UnixNano())
		}
	}
}

// SetOpenTimeout is how long a source's first attempt to open may take
// while /healthz still calls it healthy (ingest.Config.OpenTimeout;
// default ingest.DefaultOpenTimeout).
func (m *Metrics) SetOpenTimeout(name string, d time.Duration) {
	if s := m.stream(name); s != nil && d > 0 {
		s.openTimeout.Store(int64(d))
	}
}

// DecodeErrors counts damage a source's decoder met (ingest.Runner's
// DecodeErrors): n more for the stream.
func (m *Metrics) DecodeErrors(name string, n int64) {
	if s := m.stream(name); s != nil && n > 0 {
		s.decodeErrors.Add(uint64(n))
	}
}

// StreamSummary is a stream's numbers for the run's summary line.
type StreamSummary struct {
	In, Out, Dropped, DecodeErrors uint64
	// FPS is frames out a second from the first frame in to the last out:
	// the rate of the work, without the waits before the first frame and
	// after the last (closing outputs, flushing events).
	FPS float64
}

// Summary returns a stream's numbers for the summary.
func (m *Metrics) Summary(name string) StreamSummary {
	s := m.stream(name)
	if s == nil {
		return StreamSummary{}
	}
	out := StreamSummary{In: s.in.Load(), Out: s.out.Load(), Dropped: s.dropped.Load(), DecodeErrors: s.decodeErrors.Load()}
	if first, last := s.firstIn.Load(), s.lastOut.Load(); first > 0 && last > first {
		out.FPS = float64(out.Out) / time.Duration(last-first).Seconds()
	}
	return out
}

// Reconnect counts one attempt to reconnect a live source.
func (m *Metrics) Reconnect(name string) {
	if m == nil {
		return
	}
	m.stream(name)
	m.reconnects.WithLabelValues(name).Inc()
}

// IngestHook returns a function for ingest.Config.OnState that records the
// states and reconnect attempts of the source named camera, then passes
// the event on to next (which may be nil). On a nil *Metrics it returns
// next.
func (m *Metrics) IngestHook(camera string, next func(ingest.Event)) func(ingest.Event) {
	if m == nil {
		return next
	}
	m.stream(camera)
	return func(e ingest.Event) {
		s := m.stream(camera)
		s.attempt.Store(int64(e.Attempt))
		s.since.Store(time.Now().UnixNano()) // a new attempt is a new start
		m.SourceState(camera, e.State.String())
		if e.Err != nil && (e.State == ingest.StateRetrying || e.State == ingest.StateFailed) {
			m.stream(camera).lastErr.Store(e.Err.Error())
		}
		if e.State == ingest.StateConnecting && e.Attempt > 0 {
			m.Reconnect(camera)
		}
		if next != nil {
			next(e)
		}
	}
}

// Health reports every stream's source state for the web API's /healthz
// (web.Routes.Health): live and ended are fine, retrying and failed
// are not, and connecting is fine only on a source's first attempt and
// for no longer than its open timeout. A camera that was never reached
// (a server that accepts and never answers) goes connecting, retrying,
// connecting... and must not flap between 200 and 503 with it. Error is
// the last drop or failure, if any. Streams are sorted by name.
func (m *Metrics) Health() []web.SourceHealth {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	out := make([]web.SourceHealth, 0, len(m.streams))
	for name, s := range m.streams {
		st := s.state.Load().(string)
		ok := st != ingest.StateRetrying.String() && st != ingest.StateFailed.String()
		if st == ingest.StateConnecting.String() {
			ok = s.attempt.Load() == 0 && time.Since(time.Unix(0, s.since.Load())) <= time.Duration(s.openTimeout.Load())
		}
		h := web.SourceHealth{Name: name, State: st, OK: ok}
		if e, _ := s.lastErr.Load().(string); e != "" && !h.OK {
			h.Error = e
		}
		out = append(out, h)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// detected counts a frame's detections by class name.
func (m *Metrics) detected(name string, dets []detection.Detection) {
	if m == nil {
		return
	}
	for _, d := range dets {
		m.detections.WithLabelValues(name, detection.ClassName(d.Label, m.classes)).Inc()
	}
}

// sinkDropped counts a frame a sink's queue could not take.
func (m *Metrics) sinkDropped(name, sink string) {
	if m == nil {
		return
	}
	m.sinkDrops.WithLabelValues(name, sink).Inc()
}

// event counts an event made.
func (m *Metrics) event(camera, typ string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(camera, typ).Inc()
}

// snapshot counts n snapshots saved, failed or skipped.
func (m *Metrics) snapshot(camera, result string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.snapshots.WithLabelValues(camera, result).Add(float64(n))
}

// WatchEventSinks exports the event sinks' counters (Stats, read at each
// scrape): the MQTT sink's, each webhook's (labelled by its URL without
// credentials or query), the snapshot store's. Any may be nil.
func (m *Metrics) WatchEventSinks(mq *events.MQTTSink, hooks []*events.WebhookSink, hookNames []string, store *record.SnapshotStore) {
	if m == nil {
		return
	}
	m.reg.MustRegister(eventSinkCollector{mq: mq, hooks: hooks, names: hookNames, store: store})
}

type eventSinkCollector struct {
	mq    *events.MQTTSink
	hooks []*events.WebhookSink
	names []string
	store *record.SnapshotStore
}

var (
	descMQTTPublished = prometheus.NewDesc("htcstream_mqtt_published_total", "Events the MQTT broker took.", nil, nil)
	descMQTTDropped   = prometheus.NewDesc("htcstream_mqtt_dropped_total", "Events dropped from the MQTT outbox (full while the broker was away, or left at shutdown).", nil, nil)
	descMQTTErrors    = prometheus.NewDesc("htcstream_mqtt_errors_total", "Failed MQTT connection attempts and publishes.", nil, nil)
	descMQTTConnected = prometheus.NewDesc("htcstream_mqtt_connected", "1 while connected to the MQTT broker.", nil, nil)
	descMQTTQueued    = prometheus.NewDesc("htcstream_mqtt_queued", "Events waiting in the MQTT outbox.", nil, nil)
	descHookPublished = prometheus.NewDesc("htcstream_webhook_published_total", "Events a webhook receiver took (2xx).", []string{"webhook"}, nil)
	descHookDropped   = prometheus.NewDesc("htcstream_webhook_dropped_total", "Events dropped from a webhook's full queue or left at shutdown.", []string{"webhook"}, nil)
	descHookFailed    = prometheus.NewDesc("htcstream_webhook_failed_total", "Events given up after their attempts.", []string{"webhook"}, nil)
	descHookErrors    = prometheus.NewDesc("htcstream_webhook_errors_total", "Failed webhook attempts.", []string{"webhook"}, nil)
	descHookQueued    = prometheus.NewDesc("htcstream_webhook_queued", "Events waiting for a webhook.", []string{"webhook"}, nil)
	descSnapFiles     = prometheus.NewDesc("htcstream_snapshot_files", "Snapshots kept on disk.", nil, nil)
	descSnapBytes     = prometheus.NewDesc("htcstream_snapshot_bytes", "Total size of the snapshots kept.", nil, nil)
)

func (c eventSinkCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c eventSinkCollector) Collect(ch chan<- prometheus.Metric) {
	if c.mq != nil {
		st := c.mq.Stats()
		conn := 0.0
		if st.Connected {
			conn = 1
		}
		ch <- prometheus.MustNewConstMetric(descMQTTPublished, prometheus.CounterValue, float64(st.Published))
		ch <- prometheus.MustNewConstMetric(descMQTTDropped, prometheus.CounterValue, float64(st.Dropped))
		ch <- prometheus.MustNewConstMetric(descMQTTErrors, prometheus.CounterValue, float64(st.Errors))
		ch <- prometheus.MustNewConstMetric(descMQTTConnected, prometheus.GaugeValue, conn)
		ch <- prometheus.MustNewConstMetric(descMQTTQueued, prometheus.GaugeValue, float64(st.Queued))
	}
	for i, h := range c.hooks {
		st, n := h.Stats(), c.names[i]
		ch <- prometheus.MustNewConstMetric(descHookPublished, prometheus.CounterValue, float64(st.Published), n)
		ch <- prometheus.MustNewConstMetric(descHookDropped, prometheus.CounterValue, float64(st.Dropped), n)
		ch <- prometheus.MustNewConstMetric(descHookFailed, prometheus.CounterValue, float64(st.Failed), n)
		ch <- prometheus.MustNewConstMetric(descHookErrors, prometheus.CounterValue, float64(st.Errors), n)
		ch <- prometheus.MustNewConstMetric(descHookQueued, prometheus.GaugeValue, float64(st.Queued), n)
	}
	if c.store != nil {
		n, b := c.store.Stats()
		ch <- prometheus.MustNewConstMetric(descSnapFiles, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(descSnapBytes, prometheus.GaugeValue, float64(b))
	}
}

func (m *Metrics) stage(name string, d time.Duration) {
	if m == nil {
		return
	}
	m.stages.WithLabelValues(name).Observe(d.Seconds())
}

func (m *Metrics) draw(d time.Duration) { m.stage("draw", d) }

func (m *Metrics) batch(size int, _ time.Duration, t cascade.Timings) {
	if m == nil {
		return
	}
	m.batches.Observe(float64(size))
	for _, s := range t.Steps() {
		m.stage(s.Name, s.D)
	}
}

// Snapshot returns frames in, out and dropped of a stream.
func (m *Metrics) Snapshot(name string) (in, out, dropped uint64) {
	if s := m.stream(name); s != nil {
		return s.in.Load(), s.out.Load(), s.dropped.Load()
	}
	return 0, 0, 0
}

// ServeHTTP serves the metrics in Prometheus' text exposition format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m == nil {
		http.Error(w, "no metrics", http.StatusNotFound)
		return
	}
	m.handler.ServeHTTP(w, r)
}

// WriteTo writes the metrics in Prometheus' text exposition format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	if m == nil {
		return 0, nil
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	cw := &countingWriter{w: w}
	enc := expfmt.NewEncoder(cw, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return cw.n, err
		}
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// streamCollector reports the per-stream counters and states kept in
// streamMetrics (Snapshot reads the same numbers).
type streamCollector struct{ m *Metrics }

var (
	descIn = prometheus.NewDesc("htcstream_frames_in_total",
		"Frames decoded from the source.", []string{"camera"}, nil)
	descOut = prometheus.NewDesc("htcstream_frames_out_total",
		"Frames that reached the sinks.", []string{"camera"}, nil)
	descDropped = prometheus.NewDesc("htcstream_frames_dropped_total",
		"Frames of live sources dropped before inference to keep latency bounded.", []string{"camera"}, nil)
	descDecodeErrors = prometheus.NewDesc("htcstream_decode_errors_total",
		"Damage the decoder met in the source: packets rejected as invalid and pictures decoded with errors.", []string{"camera"}, nil)
	descState = prometheus.NewDesc("htcstream_source_state",
		"Current state of each source: 1 for the state it is in, 0 for the others.", []string{"camera", "state"}, nil)
)

func (c streamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descIn
	ch <- descOut
	ch <- descDropped
	ch <- descDecodeErrors
	ch <- descState
}

func (c streamCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	names := make([]string, 0, len(c.m.streams))
	for n := range c.m.streams {
		names = append(names, n)
	}
	streams := make([]*streamMetrics, len(names))
	sort.Strings(names)
	for i, n := range names {
		streams[i] = c.m.streams[n]
	}
	c.m.mu.Unlock()
	for i, n := range names {
		s := streams[i]
		ch <- prometheus.MustNewConstMetric(descIn, prometheus.CounterValue, float64(s.in.Load()), n)
		ch <- prometheus.MustNewConstMetric(descOut, prometheus.CounterValue, float64(s.out.Load()), n)
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.dropped.Load()), n)
		ch <- prometheus.MustNewConstMetric(descDecodeErrors, prometheus.CounterValue, float64(s.decodeErrors.Load()), n)
		cur := s.state.Load().(string)
		for _, st := range SourceStates {
			v := 0.0
			if st == cur {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, n, st)
		}
	}
}
