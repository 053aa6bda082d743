package pipeline

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/motion"
)

// Interval is how often the model sees a stream's frames: N >= 1 every
// Nth frame, IntervalAuto the newest frame whenever the model is free for
// the camera, 0 the source kind's default (auto for live sources, 1 for
// files). In YAML it is a number or "auto".
type Interval int

// IntervalAuto: the model takes the camera's newest frame when it is free.
const IntervalAuto Interval = -1

// ParseInterval reads "auto" or a whole number of frames >= 1.
func ParseInterval(s string) (Interval, error) {
	s = strings.TrimSpace(s)
	if s == "auto" {
		return IntervalAuto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: interval %q: want auto or a whole number of frames >= 1", ErrConfig, s)
	}
	return Interval(n), nil
}

func (iv Interval) String() string {
	switch {
	case iv == IntervalAuto:
		return "auto"
	case iv == 0:
		return "default"
	}
	return strconv.Itoa(int(iv))
}

// UnmarshalYAML takes a number or "auto".
func (iv *Interval) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseInterval(n.Value)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), ErrConfig.Error()+": "))
	}
	*iv = v
	return nil
}

// MarshalYAML writes what UnmarshalYAML reads.
func (iv Interval) MarshalYAML() (any, error) {
	if iv == IntervalAuto {
		return "auto", nil
	}
	return int(iv), nil
}

// Timing is when a frame the model did not see is drawn.
type Timing string

const (
	// TimingLive draws every frame at once with the latest tracks; a
	// keyframe's result moves the tracks when it arrives. The default for
	// live sources: latency stays the video's own.
	TimingLive Timing = "live"
	// TimingSmooth holds the frames between two keyframes (up to one
	// interval) until the later one's result is in, and interpolates each
	// object between them. The default for files.
	TimingSmooth Timing = "smooth"
)

// Schedule is one stream's keyframe policy. The zero Schedule is the model
// on every frame: a file's every frame, a live source's every frame the
// model can take (the others are dropped, as before keyframes existed).
type Schedule struct {
	// Interval: 0 or 1 every frame; N every Nth; IntervalAuto the newest
	// frame when the model is free for this camera.
	Interval Interval
	// Timing of the frames between keyframes; "" is live for a live
	// source or interval auto, smooth otherwise.
	Timing Timing
	// Motion, when set, runs the model only on frames where something
	// moves or a track moves (or after MaxInterval without a keyframe).
	Motion *motion.Config
	// MaxInterval forces a keyframe after this much stream time without
	// one, so new still objects are found; default 10 s (motion only).
	MaxInterval time.Duration
	// Propagation is how objects move on the frames between keyframes:
	// flow ("" too) or box (propagate.go).
	Propagation Propagation
}

// DefaultMaxInterval is Schedule.MaxInterval's default.
const DefaultMaxInterval = 10 * time.Second

// everyFrame says the model sees every frame it outputs: no propagation,
// no tracker needed, the path as it was before keyframes.
func (s Schedule) everyFrame() bool {
	return (s.Interval == 0 || s.Interval == 1) && s.Motion == nil
}

// validate refuses combinations that cannot work.
func (s Schedule) validate() error {
	switch s.Timing {
	case "", TimingLive, TimingSmooth:
	default:
		return fmt.Errorf("%w: timing %q: want live or smooth", ErrConfig, s.Timing)
	}
	if err := s.Propagation.validate(); err != nil {
		return err
	}
	if s.Timing == TimingSmooth && s.Interval == IntervalAuto {
		return fmt.Errorf("%w: timing smooth holds frames up to one interval: it needs interval: N, not auto", ErrConfig)
	}
	if s.Interval < IntervalAuto {
		return fmt.Errorf("%w: interval %d: want auto or a whole number of frames >= 1", ErrConfig, s.Interval)
	}
	if s.MaxInterval < 0 {
		return fmt.Errorf("%w: max_interval %v is negative", ErrConfig, s.MaxInterval)
	}
	if s.Motion != nil {
		if err := s.Motion.Validate(); err != nil {
			return fmt.Errorf("%w: motion: %w", ErrConfig, err)
		}
	}
	return nil
}

// smooth says whether the stream holds frames to interpolate (Timing
// set: newScheduler fills it in).
func (s Schedule) smooth() bool { return s.Timing == TimingSmooth }

// hold is how many frames may wait for the next keyframe in smooth timing.
func (s Schedule) hold() int {
	if !s.smooth() || s.Interval <= 1 {
		return 0
	}
	return int(s.Interval) - 1
}

// movingSpeed is the speed, in box sizes per second, above which a track
// counts as moving: a keyframe is due even where the motion detector saw
// nothing (a car rolling slowly away in front of a still background).
const movingSpeed = 0.1

// maxLiveKeys bounds a live stream's keyframes at the model at once: a
// model slower than interval N allows makes the others propagated
// frames, never a queue that grows.
const maxLiveKeys = 2

// scheduler decides, on a stream's source goroutine, which frames are
// keyframes. Its only shared state is atomic: the keyframes at the model
// (lowered by inference) and whether a track moves (set by the output
// side).
type scheduler struct {
	name string
	sch  Schedule
	live bool
	det  *motion.Detector
	m    *Metrics

	sinceKey   int
	lastKeyPTS time.Duration
	haveKey    bool
	// quiet: a frame since the last keyframe was measured still, so the
	// next keyframe that moves is motion starting (KeyMotion)
	quiet bool

	atModel atomic.Int32
	moving  atomic.Bool
}

func newScheduler(name string, sch Schedule, live bool, m *Metrics) (*scheduler, error) {
	if err := sch.validate(); err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	if sch.Interval == 0 {
		sch.Interval = 1
	}
	if sch.MaxInterval == 0 {
		sch.MaxInterval = DefaultMaxInterval
	}
	if sch.Timing == "" {
		sch.Timing = TimingSmooth
		if live || sch.Interval == IntervalAuto {
			sch.Timing = TimingLive
		}
	}
	sc := &scheduler{name: name, sch: sch, live: live, m: m, sinceKey: math.MaxInt / 2}
	if sch.Motion != nil {
		d, err := motion.New(*sch.Motion)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		sc.det = d
	}
	return sc, nil
}

// decide says whether f is a keyframe and why, and if not, whether it was
// left out because nothing moved (still).
func (sc *scheduler) decide(f *decode.Frame) (key, still bool, why KeyReason) {
	sc.sinceKey++
	var due bool
	switch {
	case sc.sch.Interval == IntervalAuto:
		due = sc.atModel.Load() == 0
	default:
		due = sc.sinceKey >= int(sc.sch.Interval)
		if sc.live && sc.atModel.Load() >= maxLiveKeys {
			due = false // the model is behind this camera's interval
		}
	}
	why = KeyInterval
	if sc.det != nil {
		// measured on every frame: the background must follow the picture
		res, err := sc.det.Detect(f.RGB, f.Width, f.Height)
		moving := err != nil || res.Moving || sc.moving.Load()
		sc.m.motion(sc.name, moving)
		forced := !sc.haveKey || f.PTS-sc.lastKeyPTS >= sc.sch.MaxInterval || f.PTS < sc.lastKeyPTS
		if !moving {
			sc.quiet = true
		}
		if due && !moving && !forced {
			return false, true, ""
		}
		switch {
		case !moving:
			why = KeyRefresh
		case sc.quiet && sc.haveKey:
			why = KeyMotion
		default:
			why = KeyMoving
		}
	}
	if !due {
		return false, false, ""
	}
	sc.sinceKey, sc.lastKeyPTS, sc.haveKey, sc.quiet = 0, f.PTS, true, false
	sc.atModel.Add(1)
	return true, false, why
}

// modelDone is called once per keyframe when the model is done with it.
func (sc *scheduler) modelDone() { sc.atModel.Add(-1) }

// schedMetrics are the keyframe series: how often the model really ran.
type schedMetrics struct {
	frames  *prometheus.CounterVec // camera, kind: keyframe, propagated, still
	keys    *prometheus.CounterVec // camera, why
	wait    *prometheus.HistogramVec
	modelHz *prometheus.GaugeVec
	moving  *prometheus.GaugeVec

	mu     sync.Mutex
	window time.Duration // modelFPSWindow
	rate   map[string]*keyWindow
	counts map[string][3]uint64 // keyframe, propagated, still
}

// modelFPSWindow is how far back htcstream_model_fps counts keyframes.
const modelFPSWindow = 10 * time.Second

// keyWindow is one camera's keyframe times within modelFPSWindow.
type keyWindow struct {
	start time.Time // the camera's first frame out
	keys  []time.Time
}

func newSchedMetrics(reg *prometheus.Registry) *schedMetrics {
	s := &schedMetrics{
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_schedule_frames_total",
			Help: "Frames out by how they were annotated: keyframe (the model ran), propagated (the model skipped it: tracks carried to it), still (the model skipped it because nothing moved; tracks carried to it).",
		}, []string{"camera", "kind"}),
		keys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "htcstream_keyframes_total",
			Help: "Keyframes by why the model ran: motion (motion started after a still spell; goes first for the model), moving (something keeps moving), refresh (still, max_interval reached), interval (no motion gating).",
		}, []string{"camera", "why"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "htcstream_model_wait_seconds",
			Help:    "How long a keyframe waited for the model: from joining the model's queue to its run starting, by why the model ran on it (motion goes first).",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"camera", "why"}),
		modelHz: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "htcstream_model_fps", Help: "Effective model rate per camera: keyframes a second over the last 10 s (since the camera started, at first); falls to 0 while the model skips the camera.",
		}, []string{"camera"}),
		moving: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "htcstream_motion", Help: "1 while the camera's picture or one of its tracks moves, 0 while still (cameras with motion gating).",
		}, []string{"camera"}),
		window: modelFPSWindow, rate: map[string]*keyWindow{}, counts: map[string][3]uint64{},
	}
	reg.MustRegister(s.frames, s.keys, s.wait, s.modelHz, s.moving)
	return s
}

// scheduled counts a frame out by kind, and sets the camera's model rate
// on every frame, so that it falls while the model skips the camera.
func (m *Metrics) scheduled(camera, kind string) {
	if m == nil {
		return
	}
	s := m.sched
	s.frames.WithLabelValues(camera, kind).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counts[camera]
	switch kind {
	case "keyframe":
		c[0]++
	case "propagated":
		c[1]++
	case "still":
		c[2]++
	}
	s.counts[camera] = c
	now := time.Now()
	w := s.rate[camera]
	if w == nil {
		w = &keyWindow{start: now}
		s.rate[camera] = w
	}
	if kind == "keyframe" {
		w.keys = append(w.keys, now)
	}
	cut := 0
	for cut < len(w.keys) && now.Sub(w.keys[cut]) > s.window {
		cut++
	}
	w.keys = w.keys[cut:]
	// over at least a second: one keyframe just after the start is not
	// a rate of hundreds
	span := min(max(now.Sub(w.start), time.Second), s.window)
	s.modelHz.WithLabelValues(camera).Set(float64(len(w.keys)) / span.Seconds())
}

// modelWait times a keyframe's wait in the model's queue.
func (m *Metrics) modelWait(camera string, why KeyReason, d time.Duration) {
	if m == nil {
		return
	}
	m.sched.wait.WithLabelValues(camera, string(why)).Observe(d.Seconds())
}

// keyframeWhy counts a keyframe by why the model ran on it.
func (m *Metrics) keyframeWhy(camera string, why KeyReason) {
	if m == nil {
		return
	}
	m.sched.keys.WithLabelValues(camera, string(why)).Inc()
}

func (m *Metrics) motion(camera string, moving bool) {
	if m == nil {
		return
	}
	v := 0.0
	if moving {
		v = 1
	}
	m.sched.moving.WithLabelValues(camera).Set(v)
}

// ScheduleCounts returns a camera's keyframes, propagated and still frames
// so far (for the run's summary and tests).
func (m *Metrics) ScheduleCounts(camera string) (key, propagated, still uint64) {
	if m == nil {
		return
	}
	m.sched.mu.Lock()
	defer m.sched.mu.Unlock()
	c := m.sched.counts[camera]
	return c[0], c[1], c[2]
}
