package pipeline

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/stream/web"
)

func TestMetricsExposition(t *testing.T) {
	m := NewMetricsWith(MetricsConfig{Provider: "cpu", Version: "v1.2.3", Model: "tiny", Classes: []string{"person", "car"}})
	m.frameIn("cam 1")
	m.frameOut("cam 1", 30*time.Millisecond)
	m.SourceState("cam 1", "live")
	m.batch(2, time.Millisecond, cascade.Timings{Backbone: 10 * time.Millisecond})
	m.detected("cam 1", []detection.Detection{{Label: 1}, {Label: 1}, {Label: 0}, {Label: 7}})
	m.sinkDropped("cam 1", "video")
	var b strings.Builder
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`htcstream_frames_in_total{camera="cam 1"} 1`,
		`htcstream_frames_out_total{camera="cam 1"} 1`,
		`htcstream_frames_dropped_total{camera="cam 1"} 0`,
		`htcstream_source_state{camera="cam 1",state="live"} 1`,
		`htcstream_source_state{camera="cam 1",state="connecting"} 0`,
		`htcstream_source_state{camera="cam 1",state="failed"} 0`,
		`htcstream_reconnects_total{camera="cam 1"} 0`,
		`htcstream_detections_total{camera="cam 1",label="car"} 2`,
		`htcstream_detections_total{camera="cam 1",label="person"} 1`,
		`htcstream_detections_total{camera="cam 1",label="class 7"} 1`,
		`htcstream_sink_dropped_total{camera="cam 1",sink="video"} 1`,
		`htcstream_latency_seconds_bucket{camera="cam 1",le="0.05"} 1`,
		`htcstream_stage_seconds_bucket{stage="backbone",le="0.01"} 1`,
		`htcstream_batch_size_bucket{le="2"} 1`,
		`htcstream_build_info{goversion="go`,
		`model="tiny",provider="cpu",version="v1.2.3"} 1`,
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if in, out, dropped := m.Snapshot("cam 1"); in != 1 || out != 1 || dropped != 0 {
		t.Errorf("snapshot %d %d %d", in, out, dropped)
	}
	var nilM *Metrics
	nilM.frameIn("x") // stages call it unconditionally
	nilM.detected("x", []detection.Detection{{}})
	nilM.sinkDropped("x", "y")
	if nilM.IngestHook("x", nil) != nil {
		t.Error("a nil Metrics' hook should be the next one, nil")
	}
}

// A live source (a real HTTP stream read by ingest) goes live, drops,
// retries and comes back; each state shows in turn on /metrics, scraped
// over HTTP, and the reconnect is counted.
func TestMetricsFollowALiveSource(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mkv")
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=1",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5", "-bf", "0", clip)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}

	// The camera: each response sends the clip, then holds the connection
	// open (the camera is live) until the test ends the response.
	end := make(chan struct{})
	var once sync.Once
	stop := make(chan struct{})
	camera := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/x-matroska")
		w.Write(data)
		w.(http.Flusher).Flush()
		select {
		case <-end:
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	defer camera.Close()
	defer once.Do(func() { close(stop) })

	src, err := ingest.Parse(camera.URL + "/live")
	if err != nil || !src.Kind.Live() {
		t.Fatalf("parse: %+v, %v", src, err)
	}
	m := NewMetrics("cpu")
	var events []string
	var emu sync.Mutex
	s := &IngestSource{ID: "door", Source: src, Metrics: m, Config: ingest.Config{
		MinBackoff: 1500 * time.Millisecond, MaxBackoff: 1500 * time.Millisecond, ReadTimeout: 20 * time.Second,
		OnState: func(e ingest.Event) { emu.Lock(); events = append(events, e.State.String()); emu.Unlock() },
	}}
	// Scraped through the web API, as Prometheus would, with its token.
	srv, err := web.NewServer(web.ServerConfig{Addr: "127.0.0.1:0", Token: "scrape-me"},
		web.Routes{Metrics: m, Health: m.Health})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fetch := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer scrape-me")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	get := func() string {
		t.Helper()
		code, body := fetch("metrics")
		if code != 200 {
			t.Fatalf("scrape: %d %s", code, body)
		}
		return body
	}
	waitState := func(want string, extra ...string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			body := get()
			ok := strings.Contains(body, `htcstream_source_state{camera="door",state="`+want+`"} 1`)
			for _, e := range extra {
				ok = ok && strings.Contains(body, e)
			}
			if ok {
				n := 0
				for _, st := range SourceStates {
					if strings.Contains(body, `htcstream_source_state{camera="door",state="`+st+`"} 1`) {
						n++
					}
				}
				if n != 1 {
					t.Fatalf("%d states at 1:\n%s", n, body)
				}
				return body
			}
			if time.Now().After(deadline) {
				emu.Lock()
				defer emu.Unlock()
				t.Fatalf("/metrics never showed %s %v (events %v):\n%s", want, extra, events, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	m.stream("door") // the run declares its streams before they start
	waitState("connecting")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() {
		runErr <- s.Run(ctx, func(f *decode.Frame) bool { m.frameIn("door"); return true })
	}()
	waitState("live", `htcstream_reconnects_total{camera="door"} 0`)
	if code, body := fetch("healthz"); code != 200 || !strings.Contains(body, `"state":"live"`) {
		t.Errorf("/healthz of a live source: %d %s", code, body)
	}
	end <- struct{}{} // the camera drops
	waitState("retrying")
	if code, body := fetch("healthz"); code != 503 || !strings.Contains(body, `"state":"retrying"`) || !strings.Contains(body, "ended") {
		t.Errorf("/healthz of a retrying source: %d %s", code, body)
	}
	waitState("live", `htcstream_reconnects_total{camera="door"} 1`)
	cancel()
	select {
	case err := <-runErr:
		if err != nil && ctx.Err() == nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	body := waitState("ended")
	if !strings.Contains(body, `htcstream_frames_in_total{camera="door"}`) || strings.Contains(body, `htcstream_frames_in_total{camera="door"} 0`) {
		t.Errorf("no frames counted:\n%s", body)
	}
	emu.Lock()
	t.Logf("states: %v", events)
	emu.Unlock()
}

// Issue 21 D11: the damage a source's decoder meets shows on /metrics
// (htcstream_decode_errors_total) and in the summary's numbers.
func TestMetricsCountDecodeErrors(t *testing.T) {
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=8",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	b, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	junk := rand.New(rand.NewPCG(21, 11))
	for i := len(b)/2 - 12500; i < len(b)/2+12500; i++ {
		b[i] = byte(junk.Uint32())
	}
	os.WriteFile(clip, b, 0o644)

	src, err := ingest.Parse(clip)
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics("cpu")
	s := &IngestSource{ID: "cam", Source: src, Metrics: m}
	if err := s.Run(context.Background(), func(f *decode.Frame) bool { m.frameIn("cam"); return true }); err != nil {
		t.Fatal(err)
	}
	sum := m.Summary("cam")
	if sum.DecodeErrors == 0 || sum.In == 0 || sum.In >= 200 {
		t.Fatalf("summary %+v: want some frames, fewer than 200, and decode errors", sum)
	}
	var w strings.Builder
	m.WriteTo(&w)
	if want := fmt.Sprintf(`htcstream_decode_errors_total{camera="cam"} %d`, sum.DecodeErrors); !strings.Contains(w.String(), want) {
		t.Errorf("exposition lacks %s", want)
	}
}

// Issue 21 D8: a camera whose server accepts and never answers went
// connecting (200), retrying (503), connecting (200)...: /healthz flapped.
// Once its first attempt has failed it stays unhealthy until it is live.
func TestHealthOfACameraThatNeverAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c) // accepted, never answered
			hmu.Unlock()
		}
	}()
	defer func() {
		hmu.Lock()
		for _, c := range held {
			c.Close()
		}
		hmu.Unlock()
	}()

	src, err := ingest.Parse("rtsp://" + ln.Addr().String() + "/cam")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics("cpu")
	s := &IngestSource{ID: "door", Source: src, Metrics: m, Config: ingest.Config{
		OpenTimeout: 300 * time.Millisecond, MinBackoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}}
	srv, err := web.NewServer(web.ServerConfig{Addr: "127.0.0.1:0"}, web.Routes{Metrics: m, Health: m.Health})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	healthz := func() (int, string) {
		t.Helper()
		res, err := http.Get(srv.URL() + "healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func(*decode.Frame) bool { return true })
	}()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := healthz(); code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/healthz never said the camera was down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Several attempts (each connecting for up to the open timeout), none
	// healthy.
	states := map[string]bool{}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		code, body := healthz()
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/healthz flapped to %d: %s", code, body)
		}
		for _, st := range []string{"connecting", "retrying"} {
			if strings.Contains(body, `"state":"`+st+`"`) {
				states[st] = true
			}
		}
	}
	if !states["connecting"] || !states["retrying"] {
		t.Errorf("states seen while unhealthy: %v, want connecting and retrying", states)
	}
}

// Issue 21: the summary's fps divided by the whole run, shutdown waits
// (closing outputs, flushing events) included. Its rate is of the frames
// alone: waiting after the last frame does not change it.
func TestSummaryRateLeavesOutTheWaitsAfterTheLastFrame(t *testing.T) {
	m := NewMetrics("cpu")
	for range 5 {
		m.frameIn("cam")
		time.Sleep(5 * time.Millisecond)
		m.frameOut("cam", time.Millisecond)
	}
	before := m.Summary("cam")
	time.Sleep(100 * time.Millisecond) // the outputs closing
	after := m.Summary("cam")
	if before.FPS <= 0 || after.FPS != before.FPS || after.Out != 5 {
		t.Errorf("rate %v before the wait, %v after (%+v)", before.FPS, after.FPS, after)
	}
}

// The run's summary reads the preview's median latency from the
// histogram's buckets, every kind of frame together, each camera and
// output apart.
func TestHandoffMedian(t *testing.T) {
	m := NewMetrics("cpu")
	if _, n := m.HandoffMedian("cam", "webrtc"); n != 0 {
		t.Fatalf("%d frames timed before any", n)
	}
	for _, ms := range []int{15, 15, 15} {
		m.handedOff("cam", "webrtc", "propagated", time.Duration(ms)*time.Millisecond)
	}
	m.handedOff("cam", "webrtc", "keyframe", 25*time.Millisecond)
	m.handedOff("cam", "video", "propagated", 600*time.Millisecond)
	m.handedOff("other", "webrtc", "propagated", 3*time.Second)
	// buckets 10-20 ms: 3 frames, 20-30 ms: 1; the median is the 2nd of 4,
	// two thirds into the first
	med, n := m.HandoffMedian("cam", "webrtc")
	if n != 4 || (med-16667*time.Microsecond).Abs() > 100*time.Microsecond {
		t.Fatalf("median %v of %d frames, want 16.7 ms of 4", med, n)
	}
	if med, n := m.HandoffMedian("cam", "video"); n != 1 || med < 500*time.Millisecond || med > time.Second {
		t.Fatalf("video: median %v of %d frames", med, n)
	}
}
