package ingest

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An HTTP source is live: when the response ends the runner connects
// again, and the frames of each new response continue the numbering and
// the clock of the last.
func TestHTTPSourceReconnectsAndContinues(t *testing.T) {
	checkNoLeaks(t)
	clip := ffmpegMake(t, "clip.mkv", "testsrc2=s=64x48:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5")
	host := serveFile(t, "/live", clip)
	url := "http://" + host + "/live"
	src, err := Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	x := startRunner(t, src, cfg)
	frames := x.collect(t, 25, 20*time.Second) // two and a half responses
	checkSeqAndPTS(t, frames, 0)
	for i, f := range frames {
		// 10 fps throughout: the seams between responses add one frame
		// interval, as any other frame does.
		if want := time.Duration(i) * 100 * time.Millisecond; (f.PTS - want).Abs() > time.Millisecond {
			t.Fatalf("frame %d pts %v, want %v", i, f.PTS, want)
		}
	}
	retry, _ := x.waitState(t, StateRetrying, time.Second)
	if !strings.Contains(retry.Err.Error(), "ended") {
		t.Errorf("retry after a response's end: %v", retry.Err)
	}
	x.stop(t)

	// A wrong path is a retry, as for RTSP.
	y := startRunner(t, Source{Kind: HTTP, Location: "http://" + host + "/nope"}, cfg)
	e, _ := y.waitState(t, StateRetrying, 5*time.Second)
	if !strings.Contains(e.Err.Error(), "404") {
		t.Errorf("wrong path: %v", e.Err)
	}
}

func TestInputOptions(t *testing.T) {
	opts := func(src Source, cfg Config) map[string]string {
		r, err := NewRunner(src, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r.inputOptions()
	}
	rtsp, _ := Parse("rtsp://127.0.0.1:8554/cam")
	o := opts(rtsp, Config{})
	if o["rtsp_transport"] != "tcp" || o["timeout"] != "2500000" || o["allowed_media_types"] != "video" {
		t.Errorf("rtsp defaults: %v", o)
	}
	rtsp.Options["timeout"] = "2000000"
	o = opts(rtsp, Config{Transport: "udp", ReadTimeout: time.Second})
	if o["rtsp_transport"] != "udp" || o["timeout"] != "2000000" {
		t.Errorf("rtsp with udp and the source's own timeout: %v", o)
	}
	o = opts(Source{Kind: HTTP, Location: "http://h/x"}, Config{ReadTimeout: 3 * time.Second})
	if o["rw_timeout"] != "1500000" {
		t.Errorf("http: %v", o)
	}
	o = opts(Source{Kind: Camera, Location: "/dev/video0", Format: "v4l2"}, Config{VideoSize: "640x480", FrameRate: "30", InputFormat: "mjpeg"})
	if o["video_size"] != "640x480" || o["framerate"] != "30" || o["input_format"] != "mjpeg" || len(o) != 3 {
		t.Errorf("camera: %v", o)
	}
	if o := opts(Source{Kind: File, Location: "/x.mp4"}, Config{Transport: "udp"}); len(o) != 0 {
		t.Errorf("file: %v", o)
	}
}

// A recorded file over HTTP is read once, every frame, and ends cleanly at
// its end, like a local file; a missing one is a failure, not a retry.
func TestHTTPRecordedFileEnds(t *testing.T) {
	checkNoLeaks(t)
	clip := ffmpegMake(t, "clip.mp4", "testsrc2=s=64x48:r=10:d=1", "-c:v", "libx264", "-pix_fmt", "yuv420p")
	host := serveFile(t, "/videos/clip.mp4", clip)
	src, err := Parse("http://" + host + "/videos/clip.mp4")
	if err != nil || src.Kind != File {
		t.Fatalf("parse: %+v, %v", src, err)
	}
	x := startRunner(t, src, Config{})
	if err := x.wait(t, 20*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	frames := x.drain()
	if len(frames) != 10 {
		t.Fatalf("%d frames, want the clip's 10", len(frames))
	}
	checkSeqAndPTS(t, frames, 0)
	if got := x.r.State(); got != StateEnded {
		t.Errorf("state %s, want ended", got)
	}

	missing, _ := Parse("http://" + host + "/videos/nope.mp4")
	y := startRunner(t, missing, Config{})
	if err := y.wait(t, 20*time.Second); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing file over HTTP: %v", err)
	}
	if got := y.r.State(); got != StateFailed {
		t.Errorf("state %s, want failed", got)
	}
}

// serveFile serves file at urlPath (and 404 elsewhere) on a loopback HTTP
// server that lives as long as the test; it returns the server's host:port.
func serveFile(t *testing.T, urlPath, file string) string {
	t.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != urlPath {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, file)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-served })
	return ln.Addr().String()
}
