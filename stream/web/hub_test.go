package web

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/internal/mediatest"
	"github.com/htcstream/htcstream/stream/encode"
)

// fakeViewer is a viewer without a peer connection: its queue is all the
// hub sees of a viewer.
func fakeViewer(queue int) *session {
	return &session{queue: make(chan item, queue)}
}

func newTestHub(t *testing.T, cfg HubConfig) *Hub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestStuckViewerDropsAlone: a viewer that never reads loses frames once
// its queue is full, each counted, while another viewer gets every frame
// and Publish never waits; when the stuck one reads again it resumes at a
// keyframe forced for it.
func TestStuckViewerDropsAlone(t *testing.T) {
	h := newTestHub(t, HubConfig{KeyframeInterval: time.Nanosecond})
	if err := h.AddStream("cam", encode.EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	st := h.stream("cam")
	stuck, live := fakeViewer(2), fakeViewer(64)
	st.addViewer(stuck)
	st.addViewer(live)

	const w, ht, n = 64, 48, 20
	for i := 0; i < n; i++ {
		if err := h.Publish("cam", w, ht, mediatest.Pattern(w, ht, i), time.Duration(i)*time.Second/30, Summary{Count: i}); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(live.queue); got != n {
		t.Fatalf("live viewer has %d frames queued, want %d", got, n)
	}
	for i := 0; i < n; i++ {
		it := <-live.queue
		if it.gap || it.f.seq != int64(i) || it.f.sum.Count != i || len(it.f.video) != 1 {
			t.Fatalf("live viewer's frame %d: gap %v seq %d count %d packets %d", i, it.gap, it.f.seq, it.f.sum.Count, len(it.f.video))
		}
	}
	if d := stuck.dropped.Load(); d != n-2 {
		t.Fatalf("stuck viewer dropped %d, want %d", d, n-2)
	}
	if s := streamStats(h, "cam"); s.Dropped != n-2 || s.Viewers != 2 || s.Frames != n || s.Encoded != n {
		t.Fatalf("stats %+v", s)
	}

	// The stuck viewer wakes up: its old frames, then the next one marked
	// as following a gap, and a keyframe.
	<-stuck.queue
	<-stuck.queue
	if err := h.Publish("cam", w, ht, mediatest.Pattern(w, ht, n), time.Duration(n)*time.Second/30, Summary{}); err != nil {
		t.Fatal(err)
	}
	it := <-stuck.queue
	if !it.gap || !it.f.video[0].Keyframe {
		t.Fatalf("first frame after the drops: gap %v keyframe %v, want both", it.gap, it.f.video[0].Keyframe)
	}
	<-live.queue
}

// TestDeliverWaitsForKeyframeAfterGap drives a session's writer logic: after
// a gap it sends nothing until a keyframe, counting what it skips.
func TestDeliverWaitsForKeyframeAfterGap(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	if err := h.AddStream("cam", encode.EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	s := fakeViewer(1)
	s.stream = h.stream("cam")
	s.waitKey = true
	frame := func(key bool) *frameOut {
		return &frameOut{video: []encode.Packet{{Keyframe: key}}}
	}
	// No track: deliver must not reach the network while waiting.
	s.deliver(item{f: frame(false)})
	if s.dropped.Load() != 1 || s.sent.Load() != 0 {
		t.Fatalf("before any keyframe: dropped %d sent %d", s.dropped.Load(), s.sent.Load())
	}
	s.waitKey = false
	s.deliver(item{f: frame(false), gap: true})
	if s.dropped.Load() != 2 || !s.waitKey {
		t.Fatalf("after a gap: dropped %d waitKey %v", s.dropped.Load(), s.waitKey)
	}
}

// TestEncodeOnlyWhileWatched: frames without viewers are counted, not
// encoded; a viewer brings an encoder whose first frame is a keyframe; the
// last viewer leaving frees it.
func TestEncodeOnlyWhileWatched(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	pub := func(i int) {
		t.Helper()
		if err := h.Publish("cam", 32, 32, mediatest.Pattern(32, 32, i), time.Duration(i)*time.Second/30, Summary{}); err != nil {
			t.Fatal(err)
		}
	}
	pub(0)
	st := h.stream("cam")
	if st == nil || st.encoder != nil || st.encoded.Load() != 0 {
		t.Fatal("a stream without viewers must be created by Publish and not encode")
	}
	v := fakeViewer(8)
	st.addViewer(v)
	pub(1)
	pub(2)
	if st.encoded.Load() != 2 || st.keyframes.Load() != 1 {
		t.Fatalf("encoded %d keyframes %d, want 2 and 1", st.encoded.Load(), st.keyframes.Load())
	}
	// A second viewer joining forces a keyframe at once.
	st.addViewer(fakeViewer(8))
	pub(3)
	if st.keyframes.Load() != 2 {
		t.Fatalf("a joining viewer got no keyframe: %d keyframes", st.keyframes.Load())
	}
	// A size change restarts the encoder; the clock going back moves on.
	if err := h.Publish("cam", 48, 32, mediatest.Pattern(48, 32, 4), 0, Summary{}); err != nil {
		t.Fatal(err)
	}
	if ew, _ := st.encoder.InputSize(); st.keyframes.Load() != 3 || ew != 48 {
		t.Fatalf("after a size change: keyframes %d width %d", st.keyframes.Load(), ew)
	}
	var last time.Duration
	for len(v.queue) > 0 {
		it := <-v.queue
		if it.f.pts <= last && it.f.seq > 0 {
			t.Fatalf("frame %d at %v after %v: time went back", it.f.seq, it.f.pts, last)
		}
		last = it.f.pts
	}
	for _, x := range *st.viewers.Load() {
		st.retire(x)
	}
	pub(5)
	if st.encoder != nil {
		t.Fatal("encoder kept after the last viewer left")
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	for _, c := range []struct {
		id   string
		w, h int
		n    int
		pts  time.Duration
		msg  string
	}{
		{"cam", 0, 10, 0, 0, "out of range"},
		{"cam", 20000, 10, 0, 0, "out of range"},
		{"cam", 4, 4, 47, 0, "want 48"},
		{"cam", 4, 4, 48, encode.MaxPTS + 1, "pts"},
		{"", 4, 4, 48, 0, "stream name"},
		{"a/b", 4, 4, 48, 0, "stream name"},
		{strings.Repeat("x", 65), 4, 4, 48, 0, "stream name"},
	} {
		err := h.Publish(c.id, c.w, c.h, make([]byte, c.n), c.pts, Summary{})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("Publish(%q, %dx%d, %d bytes, %v) = %v, want an error with %q", c.id, c.w, c.h, c.n, c.pts, err, c.msg)
		}
	}
	if len(h.Streams()) != 0 {
		t.Fatalf("bad input made streams: %+v", h.Streams())
	}
	if err := h.AddStream("cam", encode.EncoderConfig{Codec: "av1"}); err == nil {
		t.Fatal("AddStream with an unknown codec must fail")
	}
	if err := h.AddStream("cam", encode.EncoderConfig{Codec: encode.VP8}); err != nil {
		t.Fatal(err)
	}
	if err := h.AddStream("cam", encode.EncoderConfig{}); !errors.Is(err, ErrStreamExists) {
		t.Fatalf("AddStream twice: %v, want ErrStreamExists", err)
	}
	if _, err := NewHub(HubConfig{ViewerQueue: -1}); err == nil {
		t.Fatal("negative viewer queue must fail")
	}
	if _, err := NewHub(HubConfig{WebRTC: WebRTCConfig{NAT1To1IPs: []string{"not-an-ip"}}}); err == nil {
		t.Fatal("a NAT IP that is not an IP must fail")
	}
	h.Close()
	h.Close()
	if err := h.Publish("cam", 4, 4, make([]byte, 48), 0, Summary{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

// TestConcurrentPublishAndRemove races publishers of several streams with
// stream removal and Close; run with -race it checks the locking.
func TestConcurrentPublishAndRemove(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				err := h.Publish(id, 32, 32, mediatest.Pattern(32, 32, i), time.Duration(i)*time.Millisecond*33, Summary{})
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i == 5 {
					if st := h.stream(id); st != nil {
						st.addViewer(fakeViewer(1))
					}
				}
				if i == 15 {
					h.RemoveStream(id)
				}
				h.Streams()
			}
		}()
	}
	wg.Wait()
	h.Close()
}

func TestSummarize(t *testing.T) {
	dets := make([]detection.Detection, MaxSummaryLabels+5)
	for i := range dets {
		dets[i] = detection.Detection{Class: "person", Score: 0.5}
	}
	s := Summarize(dets)
	if s.Count != len(dets) || len(s.Labels) != MaxSummaryLabels || s.Labels[0].Label != "person" {
		t.Fatalf("Summarize: count %d, %d labels", s.Count, len(s.Labels))
	}
	if s := Summarize(nil); s.Count != 0 || s.Labels == nil {
		t.Fatalf("Summarize(nil) = %+v, want count 0 and an empty, non-nil label list", s)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHubPublish_1080p measures Publish of one 1080p frame to one
// viewer: the encode plus the fan-out, what the pipeline pays per frame.
// Besides wall time it reports CPU time a frame (x264 runs threads, so
// the two differ), the number that says how many streams a machine holds.
func BenchmarkHubPublish_1080p(b *testing.B) {
	pics := mediatest.HDPictures()
	h, err := NewHub(HubConfig{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	if err := h.AddStream("cam", encode.EncoderConfig{}); err != nil {
		b.Fatal(err)
	}
	v := fakeViewer(1)
	h.stream("cam").addViewer(v)
	if err := h.Publish("cam", 1920, 1080, pics[0], 0, Summary{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 1; i <= b.N; i++ {
		select {
		case <-v.queue:
		default:
		}
		if err := h.Publish("cam", 1920, 1080, pics[i%len(pics)], time.Duration(i)*time.Second/30, Summary{Count: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/frame")
}

// TestServeStopsWithContext serves the page on a real listener and stops
// when the context ends.
func TestServeStopsWithContext(t *testing.T) {
	h := newTestHub(t, HubConfig{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, l) }()
	res, err := testClient.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}
