package web

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/internal/mediatest"
	"github.com/htcstream/htcstream/internal/poll"
	"github.com/htcstream/htcstream/overlay"
)

// chromiumPath is Debian's chromium, which scripts/setup installs.
const chromiumPath = "/usr/bin/chromium"

// demoInstances are three things moving over the picture with their masks:
// an ellipse, a rounded box and a disc that comes and goes, so the count
// under the video changes.
func demoInstances(w, h, i int) []detection.Detection {
	ellipse := func(cx, cy, rx, ry int) (x, y, mw, mh int, m []byte) {
		x, y, mw, mh = cx-rx, cy-ry, 2*rx, 2*ry
		m = make([]byte, mw*mh)
		for yy := 0; yy < mh; yy++ {
			for xx := 0; xx < mw; xx++ {
				dx := float64(xx-rx) / float64(rx)
				dy := float64(yy-ry) / float64(ry)
				if dx*dx+dy*dy <= 1 {
					m[yy*mw+xx] = 1
				}
			}
		}
		return
	}
	inst := func(class int, score float32, x, y, mw, mh int, m []byte) detection.Detection {
		return detection.Detection{
			Box:   detection.Box{X1: float32(x), Y1: float32(y), X2: float32(x + mw), Y2: float32(y + mh)},
			Label: class, Score: score, Mask: detection.Mask{X: x, Y: y, W: mw, H: mh, Bits: m},
		}
	}
	t := i % 60
	var out []detection.Detection
	x, y, mw, mh, m := ellipse(w/5+3*t, h/2, w/12, h/4)
	out = append(out, inst(0, 0.93, x, y, mw, mh, m))
	x, y, mw, mh, m = ellipse(w*3/4-2*t, h*2/3, w/8, h/9)
	for k := range m {
		m[k] = 1 // a box with its corners: a car, roughly
	}
	out = append(out, inst(1, 0.81, x, y, mw, mh, m))
	if t < 30 {
		x, y, mw, mh, m = ellipse(w/2, h/4+t, h/10, h/10)
		out = append(out, inst(2, 0.62, x, y, mw, mh, m))
	}
	return out
}

// TestBrowserViewer plays a stream in real headless Chromium through the
// embedded viewer page: a clip made by the ffmpeg CLI, decoded, overlaid
// with masks, boxes and labels, published at 15 fps. The page's video must
// play (time advancing, frames decoded), its data channel must deliver the
// detections, and the page must end its session when it goes away. It logs
// the latency from Publish to the frame reaching the screen, and saves a
// screenshot (to docs/img/viewer.png too when
// HTCSTREAM_UPDATE_SCREENSHOT=1).
func TestBrowserViewer(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("Chromium is needed at %s for the browser test: run scripts/setup, which installs Debian's chromium (%v)", chromiumPath, err)
	}
	dir := t.TempDir()
	clip := filepath.Join(dir, "clip.mp4")
	out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=15",
		"-t", "2", "-pix_fmt", "yuv420p", "-c:v", "libx264", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	frames := mediatest.DecodeFile(t, clip)
	if len(frames) < 10 {
		t.Fatalf("decoded %d frames of the clip", len(frames))
	}
	w, h := frames[0].Width, frames[0].Height

	// Behind the Server with a token, as when serving beyond this machine:
	// the page must ask for it, take it from a link's #token= and send it.
	const token = "tok-3f9a"
	hub, _, base := startServer(t, HubConfig{}, ServerConfig{Token: token}, Routes{})
	renderer := overlay.NewRenderer(overlay.DefaultStyle(), []string{"person", "car", "dog"})
	classes := []string{"person", "car", "dog"}

	// Publish in a loop at 15 fps until the test ends, as a pipeline would:
	// draw, then hand over.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pubErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / 15)
		defer tick.Stop()
		start := time.Now()
		buf := make([]byte, w*h*3)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			f := frames[i%len(frames)]
			copy(buf, f.RGB)
			inst := demoInstances(w, h, i)
			if err := renderer.Draw(buf, w, h, inst, &overlay.HUD{Stream: "demo", FPS: 15}); err != nil {
				pubErr = err
				return
			}
			sum := Summary{Count: len(inst), Labels: []LabelScore{}}
			for _, in := range inst {
				sum.Labels = append(sum.Labels, LabelScore{Label: classes[in.Label], Score: in.Score})
			}
			if err := hub.Publish("demo", w, h, buf, time.Since(start), sum); err != nil {
				pubErr = err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		if pubErr != nil {
			t.Errorf("publisher: %v", pubErr)
		}
	}()
	poll.Until(t, "the demo stream", 5*time.Second, func() bool { return len(hub.Streams()) == 1 })

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.UserDataDir(filepath.Join(dir, "chromium")),
		chromedp.WindowSize(1280, 860),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	// Without the token the page asks for it.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("open the viewer page: %v", err)
	}
	poll.Until(t, "the page to ask for the token", 10*time.Second, func() bool {
		asks, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!document.querySelector('#auth').hidden`))
		return err == nil && asks
	})
	// The bare address with the token: the page plays every stream itself.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#token="+token)); err != nil {
		t.Fatalf("open the viewer page: %v", err)
	}
	kept, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.hash + '|' + localStorage.getItem('htcstream.token')`))
	if err != nil || kept != "|"+token {
		t.Fatalf("the page should keep the token and strip it from the address: %q %v", kept, err)
	}

	type pageState struct {
		CurrentTime float64 `json:"currentTime"`
		ReadyState  int     `json:"readyState"`
		CountText   string  `json:"countText"`
		Stats       struct {
			State         string    `json:"state"`
			Hello         bool      `json:"hello"`
			Detections    int       `json:"detections"`
			OutOfOrder    int       `json:"outOfOrder"`
			LastCount     int       `json:"lastCount"`
			FramesDecoded int       `json:"framesDecoded"`
			FramesDropped int       `json:"framesDropped"`
			FPS           float64   `json:"fps"`
			LatencyMs     []float64 `json:"latencyMs"`
			Synced        int       `json:"synced"`
			Lagging       bool      `json:"lagging"`
			ShownRtp      int64     `json:"shownRtp"`
			LabelsRtp     int64     `json:"labelsRtp"`
		} `json:"stats"`
	}
	read := func() pageState {
		t.Helper()
		st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`(() => {
			const v = document.querySelector('video');
			const c = document.querySelector('.det .count');
			return {
				currentTime: v ? v.currentTime : 0,
				readyState: v ? v.readyState : 0,
				countText: c ? c.textContent : '',
				stats: (window.__htcstats || {}).demo || {},
			};
		})()`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		return st
	}
	var st pageState
	poll.Until(t, "the viewer to play", 45*time.Second, func() bool {
		st = read()
		if st.Stats.State == "error" {
			t.Fatalf("the viewer did not play: %+v (hub: %+v)", st, hub.Streams())
		}
		return st.Stats.FramesDecoded > 30 && st.Stats.Detections > 30 && len(st.Stats.LatencyMs) >= 20 && st.ReadyState >= 2 && st.Stats.Synced > 20
	})
	var later pageState
	poll.Until(t, fmt.Sprintf("the video time to move on from %.2f s", st.CurrentTime), 5*time.Second, func() bool {
		later = read()
		return later.CurrentTime > st.CurrentTime
	})
	if !later.Stats.Hello || later.Stats.OutOfOrder != 0 || later.Stats.LastCount < 2 || later.CountText == "" {
		t.Fatalf("detections on the page: %+v", later)
	}
	// The labels shown are those of the frame on screen, matched by its
	// RTP timestamp, not the newest message's (which runs ahead of the
	// video's jitter buffer).
	if later.Stats.Lagging || later.Stats.Synced < 20 || later.Stats.LabelsRtp != later.Stats.ShownRtp {
		t.Fatalf("labels out of step with the picture: %+v", later.Stats)
	}
	if s := streamStats(hub, "demo"); s.Viewers != 1 {
		t.Fatalf("hub sees %d viewers, want 1: %+v", s.Viewers, s)
	}

	lat := slices.Clone(later.Stats.LatencyMs)
	slices.Sort(lat)
	pct := func(p float64) float64 { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("browser: %d frames decoded, %d dropped, %.1f fps, %d detection messages; video time %.2f s, readyState %d",
		later.Stats.FramesDecoded, later.Stats.FramesDropped, later.Stats.FPS, later.Stats.Detections, later.CurrentTime, later.ReadyState)
	t.Logf("latency Publish -> presented in Chromium (loopback, %d frames): median %.1f ms, p10 %.1f ms, p90 %.1f ms",
		len(lat), pct(0.5), pct(0.1), pct(0.9))

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(dir, "viewer.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	if os.Getenv("HTCSTREAM_UPDATE_SCREENSHOT") == "1" {
		doc := filepath.Join("..", "..", "docs", "img", "viewer.png")
		if err := os.MkdirAll(filepath.Dir(doc), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(doc, png, 0o644); err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(doc)
		t.Logf("screenshot also at %s", abs)
	}

	// Leaving the page ends the session (pagehide sends the DELETE).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("leave the page: %v", err)
	}
	// Faster than any ICE timeout could end it: the DELETE, with the token.
	poll.Until(t, "the page's session to end", 4*time.Second, func() bool { return hub.Sessions() == 0 })
}
