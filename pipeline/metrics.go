package pipeline

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/htcstream/htcstream/cascade"
)

// Metrics counts what the pipeline does and serves it in Prometheus' text
// format. All methods are safe for concurrent use and do nothing on a nil
// *Metrics, so stages need not check.
type Metrics struct {
	mu       sync.Mutex
	streams  map[string]*streamMetrics
	stages   map[string]*histogram
	batches  *histogram
	provider string
}

type streamMetrics struct {
	in, out, dropped uint64
	state            string
	latency          *histogram
}

// NewMetrics returns empty metrics; provider names the execution provider
// the model runs on.
func NewMetrics(provider string) *Metrics {
	return &Metrics{
		streams:  map[string]*streamMetrics{},
		stages:   map[string]*histogram{},
		batches:  newHistogram([]float64{1, 2, 4, 8, 16, 32}),
		provider: provider,
	}
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func (m *Metrics) stream(name string) *streamMetrics {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.streams[name]
	if s == nil {
		s = &streamMetrics{state: "connecting", latency: newHistogram(latencyBuckets)}
		m.streams[name] = s
	}
	return s
}

func (m *Metrics) with(name string, f func(*streamMetrics)) {
	if m == nil {
		return
	}
	s := m.stream(name)
	m.mu.Lock()
	f(s)
	m.mu.Unlock()
}

func (m *Metrics) frameIn(name string)      { m.with(name, func(s *streamMetrics) { s.in++ }) }
func (m *Metrics) frameDropped(name string) { m.with(name, func(s *streamMetrics) { s.dropped++ }) }
func (m *Metrics) frameOut(name string, latency time.Duration) {
	m.with(name, func(s *streamMetrics) { s.out++; s.latency.observe(latency.Seconds()) })
}

// SourceState records a source's state (connecting, live, retrying,
// failed, ended).
func (m *Metrics) SourceState(name, state string) {
	m.with(name, func(s *streamMetrics) { s.state = state })
}

func (m *Metrics) stage(name string, d time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	h := m.stages[name]
	if h == nil {
		h = newHistogram(latencyBuckets)
		m.stages[name] = h
	}
	h.observe(d.Seconds())
	m.mu.Unlock()
}

func (m *Metrics) draw(d time.Duration) { m.stage("draw", d) }

func (m *Metrics) batch(size int, _ time.Duration, t cascade.Timings) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.batches.observe(float64(size))
	m.mu.Unlock()
	for name, d := range map[string]time.Duration{
		"preprocess": t.Preprocess, "backbone": t.Backbone, "proposals": t.Proposals,
		"bbox_heads": t.BBoxHeads, "merge": t.Merge, "mask_heads": t.MaskHeads, "paste": t.Paste,
	} {
		m.stage(name, d)
	}
}

// Snapshot returns frames in, out and dropped of a stream.
func (m *Metrics) Snapshot(name string) (in, out, dropped uint64) {
	m.with(name, func(s *streamMetrics) { in, out, dropped = s.in, s.out, s.dropped })
	return
}

// ServeHTTP writes the metrics in Prometheus' text exposition format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.WriteTo(w)
}

// WriteTo writes the metrics in Prometheus' text exposition format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	m.mu.Lock()
	names := make([]string, 0, len(m.streams))
	for n := range m.streams {
		names = append(names, n)
	}
	sort.Strings(names)
	counter := func(metric, help string, get func(*streamMetrics) uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", metric, help, metric)
		for _, n := range names {
			fmt.Fprintf(&b, "%s{stream=%q} %d\n", metric, n, get(m.streams[n]))
		}
	}
	counter("htcstream_frames_in_total", "Frames decoded from the source.", func(s *streamMetrics) uint64 { return s.in })
	counter("htcstream_frames_out_total", "Frames that reached the sinks.", func(s *streamMetrics) uint64 { return s.out })
	counter("htcstream_frames_dropped_total", "Frames of live sources dropped to keep latency bounded.", func(s *streamMetrics) uint64 { return s.dropped })
	b.WriteString("# HELP htcstream_source_state Current state of each source (1 = in that state).\n# TYPE htcstream_source_state gauge\n")
	for _, n := range names {
		fmt.Fprintf(&b, "htcstream_source_state{stream=%q,state=%q} 1\n", n, m.streams[n].state)
	}
	b.WriteString("# HELP htcstream_latency_seconds Capture-to-drawn latency of frames.\n# TYPE htcstream_latency_seconds histogram\n")
	for _, n := range names {
		m.streams[n].latency.write(&b, "htcstream_latency_seconds", fmt.Sprintf("stream=%q", n))
	}
	stages := make([]string, 0, len(m.stages))
	for s := range m.stages {
		stages = append(stages, s)
	}
	sort.Strings(stages)
	b.WriteString("# HELP htcstream_stage_seconds Time per batch (per frame for draw) in each step.\n# TYPE htcstream_stage_seconds histogram\n")
	for _, s := range stages {
		m.stages[s].write(&b, "htcstream_stage_seconds", fmt.Sprintf("stage=%q", s))
	}
	b.WriteString("# HELP htcstream_batch_size Frames per inference batch.\n# TYPE htcstream_batch_size histogram\n")
	m.batches.write(&b, "htcstream_batch_size", "")
	fmt.Fprintf(&b, "# HELP htcstream_execution_provider The provider the model runs on.\n# TYPE htcstream_execution_provider gauge\nhtcstream_execution_provider{provider=%q} 1\n", m.provider)
	m.mu.Unlock()
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// histogram is a Prometheus-style cumulative histogram.
type histogram struct {
	bounds []float64
	counts []uint64
	sum    float64
	n      uint64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds))}
}

func (h *histogram) observe(v float64) {
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i]++
		}
	}
	h.sum += v
	h.n++
}

func (h *histogram) write(b *strings.Builder, name, labels string) {
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i, bound := range h.bounds {
		fmt.Fprintf(b, "%s_bucket{%s%sle=\"%g\"} %d\n", name, labels, sep, bound, h.counts[i])
	}
	fmt.Fprintf(b, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, h.n)
	if labels != "" {
		labels = "{" + labels + "}"
	}
	fmt.Fprintf(b, "%s_sum%s %g\n%s_count%s %d\n", name, labels, h.sum, name, labels, h.n)
}
