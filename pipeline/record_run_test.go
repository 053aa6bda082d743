package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/internal/mediatest"
)

// liveHTTP serves the sample as a live MPEG-TS stream at its own pace,
// looped, from the ffmpeg CLI's HTTP server: a camera as ingest meets one.
func liveHTTP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "http://" + addr + "/yard.ts"
	cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", sampleVideo,
		"-c", "copy", "-f", "mpegts", "-listen", "1", url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// ffmpeg's -listen 1 serves one client and no probe: the camera's
	// retries (from 0.5 s) find it listening
	return url
}

// hookEvents is a loopback webhook receiver that keeps every event it gets.
type hookEvents struct {
	srv *httptest.Server
	mu  sync.Mutex
	evs []events.Event
}

func newHookEvents(t *testing.T) *hookEvents {
	h := &hookEvents{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev events.Event
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &ev) == nil {
			h.mu.Lock()
			h.evs = append(h.evs, ev)
			h.mu.Unlock()
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// all is a copy of the events so far, in the order they came.
func (h *hookEvents) all() []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]events.Event(nil), h.evs...)
}

// waitEnd polls for the latest end event with a clip_url whose last frame
// is older than settled (its post-roll is in), for up to 90 s.
func (h *hookEvents) waitEnd(t *testing.T, settled time.Duration) events.Event {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var end events.Event
		evs := h.all()
		for _, e := range evs {
			if e.Type == events.EventEnd && e.ClipURL != "" && time.Since(e.LastSeen) > settled {
				end = e
			}
		}
		if end.ClipURL != "" {
			return end
		}
		if time.Now().After(deadline) {
			t.Fatalf("no end event with a clip_url in 90 s (%d events)", len(evs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// liveRun is a run with a preview server, going on in the background.
type liveRun struct {
	base string // the preview's URL, without its final slash
	stop chan os.Signal
	done chan error
}

// startRun starts Execute and waits for its preview line.
func startRun(t *testing.T, cfg RunConfig) *liveRun {
	t.Helper()
	out := &lineWriter{lines: make(chan string, 16)}
	r := &liveRun{stop: make(chan os.Signal, 1), done: make(chan error, 1)}
	go func() { r.done <- Execute(cfg, Options{Stdout: out, Interrupt: r.stop}) }()
	select {
	case l := <-out.lines:
		if !strings.HasPrefix(l, "preview: ") {
			t.Fatalf("first line %q", l)
		}
		r.base = strings.TrimSuffix(strings.Fields(strings.TrimPrefix(l, "preview: "))[0], "/")
	case err := <-r.done:
		t.Fatalf("run ended at once: %v", err)
	}
	return r
}

// interrupt stops the run as Ctrl-C does and returns its error; the
// interrupt itself is no error.
func (r *liveRun) interrupt() error {
	r.stop <- os.Interrupt
	if err := <-r.done; err != nil && !strings.Contains(err.Error(), "interrupt") {
		return err
	}
	return nil
}

// A recording camera: its own packets go into MP4 segments while the run
// goes on, the web API serves them with byte ranges behind the token, an
// event's end carries a clip_url whose clip is cut from the recordings, and
// /metrics says what is on disk.
func TestRunRecordsAndCutsClips(t *testing.T) {
	src := liveHTTP(t)
	dir := t.TempDir()
	hook := newHookEvents(t)

	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Cameras = map[string]CameraConfig{}
	cam := cfg.cameraDefaults()
	cam.URL = src
	cam.Record.Enabled = true
	cam.Record.Dir = filepath.Join(dir, "rec")
	cam.Record.Segment = 2 * time.Second
	cam.Record.Clip.Pre, cam.Record.Clip.Post = time.Second, time.Second
	cam.Events = cfg.Events.EventRules
	cam.Events.Enabled = true
	cam.Events.Tracker.MaxMisses = 5 // tracks end soon after the loop's cut
	cfg.Cameras["yard"] = cam
	cfg.Events.Enabled = true
	cfg.Events.Snapshots.Dir = filepath.Join(dir, "snaps")
	cfg.Events.Store.Path = filepath.Join(dir, "events.db")
	cfg.Webhooks = []WebhookConfig{{URL: hook.srv.URL + "/events"}}
	cfg.Outputs.Serve = "127.0.0.1:0"
	const token = "rec-test-token-0123456789"
	cfg.Server.Token = token

	run := startRun(t, cfg)
	base := run.base
	get := func(path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	bearer := map[string]string{"Authorization": "Bearer " + token}

	// an end event with its clip, and its post-roll on disk
	end := hook.waitEnd(t, 4*time.Second)
	if want := fmt.Sprintf("/clips/yard/%s.mp4", end.ID); end.ClipURL != want {
		t.Fatalf("clip_url %q, want %q", end.ClipURL, want)
	}
	if resp, _ := get(end.ClipURL, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a clip without the token: %s", resp.Status)
	}
	resp, body := get(end.ClipURL, bearer)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "video/mp4" {
		t.Fatalf("clip: %s %s", resp.Status, body)
	}
	clip := filepath.Join(dir, "clip.mp4")
	os.WriteFile(clip, body, 0o644)
	info := mediatest.Probe(t, clip)
	dur, _ := strconv.ParseFloat(info.Format.Duration, 64)
	// pre- and post-roll of 1 s each; the start goes back to a keyframe
	// (one a second in the sample)
	want := end.LastSeen.Sub(end.FirstSeen).Seconds() + 2
	if info.Streams[0].CodecName != "h264" || dur < want-2 || dur > want+1.5 {
		t.Fatalf("clip of a %.1f s event: %.2f s of %s, want about %.1f s of h264", end.LastSeen.Sub(end.FirstSeen).Seconds(), dur, info.Streams[0].CodecName, want)
	}
	// the page's media cookie opens it too (for <video>)
	if resp, _ := get(end.ClipURL, map[string]string{"Cookie": "htcstream_token=" + token}); resp.StatusCode != http.StatusOK {
		t.Fatalf("clip with the media cookie: %s", resp.Status)
	}

	segs, _ := filepath.Glob(filepath.Join(dir, "rec", "yard", "yard-*.mp4"))
	if len(segs) < 2 {
		t.Fatalf("segments: %v", segs)
	}
	resp, body = get("/recordings/yard/"+filepath.Base(segs[0]), map[string]string{"Authorization": "Bearer " + token, "Range": "bytes=0-99"})
	if resp.StatusCode != http.StatusPartialContent || len(body) != 100 {
		t.Fatalf("a range of a segment: %s, %d bytes", resp.Status, len(body))
	}
	if resp, _ := get("/recordings/yard/..%2f..%2fetc%2fpasswd", bearer); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a path out of the folder: %s", resp.Status)
	}
	_, metrics := get("/metrics", bearer)
	m := regexp.MustCompile(`(?m)^htcstream_recording_bytes\{camera="yard"\} (\S+)$`).FindSubmatch(metrics)
	if m == nil {
		t.Fatalf("no htcstream_recording_bytes for yard in /metrics")
	}
	if v, _ := strconv.ParseFloat(string(m[1]), 64); v <= 0 {
		t.Fatalf("htcstream_recording_bytes %v", v)
	}

	// the event store lists the segments and the event with its clip
	_, body = get("/api/recordings?camera=yard", bearer)
	var recs struct {
		Segments []struct {
			Path  string `json:"path"`
			Start string `json:"start"`
		} `json:"segments"`
	}
	if err := json.Unmarshal(body, &recs); err != nil || len(recs.Segments) < 2 {
		t.Fatalf("/api/recordings: %v %s", err, body)
	}
	for _, g := range recs.Segments {
		if _, err := os.Stat(g.Path); err != nil {
			t.Errorf("the store lists %s: %v", g.Path, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body = get("/api/events?camera=yard&limit=500", bearer)
		if strings.Contains(string(body), end.ClipURL) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/events does not give %s: %.500s", end.ClipURL, body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	reviewInChromium(t, base, token, end.ID)

	if err := run.interrupt(); err != nil {
		t.Fatalf("run: %v", err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, "rec", "yard", "yard-*.mp4"))
	for _, s := range segs {
		if p := mediatest.Probe(t, s); p.Streams[0].CodecName != "h264" {
			t.Errorf("segment %s: %+v", s, p)
		}
	}
	t.Logf("%d segments; clip of event %s (%.1f s): %.2f s", len(segs), end.ID, end.LastSeen.Sub(end.FirstSeen).Seconds(), dur)

	// After a restart the store still has the events, and an earlier
	// event's clip, never asked for before, is cut from its window there.
	var other events.Event
	for _, e := range hook.all() {
		if e.Type == events.EventEnd && e.ClipURL != "" && e.ID != end.ID && e.FirstSeen.After(end.LastSeen.Add(-time.Minute)) {
			other = e
		}
	}
	if other.ID == "" {
		t.Fatal("no second ended event to ask for after the restart")
	}
	cfg.Cameras["yard"] = func() CameraConfig { c := cfg.Cameras["yard"]; c.URL = liveHTTP(t); return c }()
	run = startRun(t, cfg)
	base = run.base
	resp, body = get(other.ClipURL, bearer)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after a restart, %s: %s %s", other.ClipURL, resp.Status, body)
	}
	os.WriteFile(clip, body, 0o644)
	if p := mediatest.Probe(t, clip); p.Streams[0].CodecName != "h264" {
		t.Fatalf("the clip after a restart: %+v", p)
	}
	if _, body = get("/api/events?camera=yard&limit=500", bearer); !strings.Contains(string(body), other.ID) {
		t.Fatalf("after a restart the store lists no %s", other.ID)
	}
	run.interrupt()
}

// reviewInChromium opens the page's Events tab in headless Chromium, clicks
// the event and watches its clip play, then plays a moment of the
// recordings from the timeline; screenshots of the three tabs go to
// docs/img with HTCSTREAM_UPDATE_SCREENSHOT=1.
func reviewInChromium(t *testing.T, base, token, eventID string) {
	t.Helper()
	const chromium = "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("Chromium is needed at %s: run scripts/setup (%v)", chromium, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"), chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "chromium")), chromedp.WindowSize(1100, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 120*time.Second)
	defer cancelT()
	shot := func(name string) {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if os.Getenv("HTCSTREAM_UPDATE_SCREENSHOT") == "1" {
			os.WriteFile(filepath.Join("..", "docs", "img", name), png, 0o644)
		}
	}
	waitJS := func(what, js string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
			if err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({rec: (() => { const v = document.querySelector('#rec-video'); return v && {src: v.src, err: v.error && v.error.message, code: v.error && v.error.code, rs: v.readyState, ns: v.networkState, t: v.currentTime, d: v.duration, msg: document.querySelector('#rec-msg').textContent, now: document.querySelector('#rec-now').textContent}; })(), det: (document.querySelector('.det') || {}).textContent, chips: [...document.querySelectorAll('.chip')].map(c => c.title), stats: window.__htcstats})`))
				t.Fatalf("%s: not within %v (%v); page: %.1500s", what, within, err, state)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Live: the grid plays the camera; its labels carry per-stage scores.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#token="+token)); err != nil {
		t.Fatal(err)
	}
	waitJS("live video", `(() => { const v = document.querySelector('#players video'); return !!v && v.currentTime > 0.5; })()`, 45*time.Second)
	waitJS("the tile's model/tracker/motion state", `/model|tracked|still/.test(document.querySelector('.player .model').textContent)`, 10*time.Second)
	waitJS("per-stage scores on a label", `[...document.querySelectorAll('.chip')].some(c => /stage 1 .* ensemble/.test(c.title))`, 30*time.Second)
	shot("review-live.png")

	// Events: a card per event; a click plays its clip.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#events")); err != nil {
		t.Fatal(err)
	}
	waitJS("event cards", `document.querySelectorAll('#event-list .card').length > 0`, 20*time.Second)
	waitJS("the card's per-stage scores", `/stage 1 .* ensemble/.test(document.querySelector('#event-list .card .stages').textContent)`, 5*time.Second)
	shot("review-events.png")
	if clicked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => {
		const i = eventsShown.findIndex(e => e.id === %q);
		const card = document.querySelector('#event-list .card[data-index="' + i + '"]');
		if (!card) return false;
		card.click();
		return true;
	})()`, eventID))); err != nil || !clicked {
		t.Fatalf("click the event %s's card: %v", eventID, err)
	}
	waitJS("the clip playing", `(() => { const v = document.querySelector('#clip video'); return document.querySelector('#clip').open && v.currentTime > 0.5; })()`, 20*time.Second)
	shot("review-clip.png")

	// Recordings: the day's segments on the timeline; a click plays there.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#recordings")); err != nil {
		t.Fatal(err)
	}
	waitJS("segments on the timeline", `document.querySelectorAll('#timeline .seg').length > 0`, 20*time.Second)
	box, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => { const r = document.querySelector('#timeline .seg').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.MouseClickXY(box[0], box[1])); err != nil {
		t.Fatal(err)
	}
	waitJS("the recording playing", `document.querySelector('#rec-video').currentTime > 0.5`, 20*time.Second)
	shot("review-recordings.png")

	// A phone: every tab fits its width (nothing scrolls sideways).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
		t.Fatal(err)
	}
	for _, tab := range []string{"live", "recordings", "events"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#"+tab)); err != nil {
			t.Fatal(err)
		}
		waitJS("the "+tab+" tab on a phone", `!document.querySelector('#tab-`+tab+`').hidden && document.documentElement.scrollWidth <= window.innerWidth + 1`, 10*time.Second)
	}
	shot("review-phone.png")
}

// A camera that makes events but is not recorded still gives each end
// event a clip: its last minute is kept in memory.
func TestRunClipsFromTheRingWithoutRecording(t *testing.T) {
	src := liveHTTP(t)
	hook := newHookEvents(t)
	dir := t.TempDir()
	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Record.Dir = filepath.Join(dir, "rec") // clips only: nothing is recorded
	cfg.Record.Clip.Pre, cfg.Record.Clip.Post = time.Second, time.Second
	cfg.Cameras = map[string]CameraConfig{}
	cam := cfg.cameraDefaults()
	cam.URL = src
	cam.Events = cfg.Events.EventRules
	cam.Events.Enabled = true
	cam.Events.Tracker.MaxMisses = 5
	cfg.Cameras["gate"] = cam
	cfg.Events.Enabled = true
	cfg.Webhooks = []WebhookConfig{{URL: hook.srv.URL}}
	cfg.Outputs.Serve = "127.0.0.1:0"
	run := startRun(t, cfg)
	defer run.interrupt()
	end := hook.waitEnd(t, 3*time.Second)
	resp, err := http.Get(run.base + end.ClipURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("clip from the ring: %s %s", resp.Status, body)
	}
	clip := filepath.Join(dir, "clip.mp4")
	os.WriteFile(clip, body, 0o644)
	info := mediatest.Probe(t, clip)
	dur, _ := strconv.ParseFloat(info.Format.Duration, 64)
	// the event itself at least; the rolls around it are measured by when
	// packets arrived, which a loaded machine bunches up
	if ev := end.LastSeen.Sub(end.FirstSeen).Seconds(); info.Streams[0].CodecName != "h264" || dur < ev || dur > ev+3.5 {
		t.Fatalf("ring clip of a %.1f s event (1 s before and after): %.2f s of %s", ev, dur, info.Streams[0].CodecName)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "rec", "gate", "gate-*.mp4")); len(segs) != 0 {
		t.Fatalf("a camera without recording wrote segments: %v", segs)
	}
}

// Mode annotated: the frames as drawn go into the same segments (names,
// fragments, retention) as the camera's own packets would; a segment
// being written already plays.
func TestRunRecordsAnnotatedSegments(t *testing.T) {
	src := liveHTTP(t)
	dir := t.TempDir()
	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Cameras = map[string]CameraConfig{}
	cam := cfg.cameraDefaults()
	cam.URL = src
	cam.Record.Enabled = true
	cam.Record.Mode = "annotated"
	cam.Record.Dir = filepath.Join(dir, "rec")
	cam.Record.Segment = 4 * time.Second
	cfg.Cameras["porch"] = cam
	cfg.Outputs.Serve = "127.0.0.1:0"
	run := startRun(t, cfg)
	deadline := time.Now().Add(60 * time.Second)
	var segs []string
	for len(segs) < 2 {
		if time.Now().After(deadline) {
			run.interrupt()
			t.Fatalf("segments after 60 s: %v", segs)
		}
		time.Sleep(200 * time.Millisecond)
		segs, _ = filepath.Glob(filepath.Join(dir, "rec", "porch", "porch-*.mp4"))
	}
	// the newest is being written: it plays already, up to its last
	// whole fragment (a second)
	growing := segs[len(segs)-1]
	playable := false
	for end := time.Now().Add(5 * time.Second); !playable && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		n, err := mediatest.CountPackets(growing)
		playable = err == nil && n > 0
	}
	if now, _ := filepath.Glob(filepath.Join(dir, "rec", "porch", "porch-*.mp4")); !playable || now[len(now)-1] != growing {
		t.Fatalf("the segment being written (%s) does not play, or it was done before it did", growing)
	}
	// the drawn frames written into the segments are timed from capture
	if n := metricValue(t, run.base+"/metrics", `htcstream_frame_latency_seconds_count{camera="porch",kind="propagated",output="record"}`) +
		metricValue(t, run.base+"/metrics", `htcstream_frame_latency_seconds_count{camera="porch",kind="keyframe",output="record"}`); n < 10 {
		t.Errorf("htcstream_frame_latency_seconds counted %v recorded frames", n)
	}
	if err := run.interrupt(); err != nil {
		t.Fatalf("run: %v", err)
	}
	segs, _ = filepath.Glob(filepath.Join(dir, "rec", "porch", "porch-*.mp4"))
	for _, s := range segs {
		p := mediatest.Probe(t, s)
		dur, _ := strconv.ParseFloat(p.Format.Duration, 64)
		if p.Streams[0].CodecName != "h264" || p.Frames(t) < 10 || dur > 4.5 {
			t.Errorf("segment %s: %s, %d frames, %.2f s", s, p.Streams[0].CodecName, p.Frames(t), dur)
		}
	}
	t.Logf("%d annotated segments", len(segs))
}
