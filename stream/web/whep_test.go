package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media/h264writer"
	"github.com/pion/webrtc/v3/pkg/media/ivfwriter"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/internal/mediatest"
	"github.com/htcstream/htcstream/internal/poll"
	"github.com/htcstream/htcstream/internal/whepclient"
	"github.com/htcstream/htcstream/stream/encode"
)

// quietLogger keeps session chatter out of test output unless -v asks.
func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testClient has no keep-alive connections, whose server goroutines would
// blur the goroutine counts.
var testClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}

// startHub serves a new hub on an ephemeral loopback port.
func startHub(t *testing.T, cfg HubConfig) (*Hub, string) {
	t.Helper()
	h := newTestHub(t, cfg)
	srv := httptest.NewServer(h)
	// The hub closes first, so its sessions end before the server waits for
	// their requests; newTestHub's own Close afterwards finds nothing left.
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, srv.URL
}

// dialViewer connects a real pion WHEP client (internal/whepclient) to
// base/whep/stream; onRTP, when not nil, sees every RTP packet from the
// reader goroutine.
func dialViewer(base, stream string, onRTP func(*rtp.Packet)) (*whepclient.Viewer, error) {
	return dialViewerWith(base, stream, nil, onRTP)
}

// dialViewerWith is dialViewer sending hdr (e.g. Authorization) with the
// offer and the DELETE.
func dialViewerWith(base, stream string, hdr http.Header, onRTP func(*rtp.Packet)) (*whepclient.Viewer, error) {
	api, err := NewAPI(WebRTCConfig{})
	if err != nil {
		return nil, err
	}
	return whepclient.Dial(base, stream, whepclient.Options{API: api, Header: hdr, OnRTP: onRTP})
}

func waitChan(t *testing.T, what string, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func streamStats(h *Hub, id string) StreamStats {
	for _, s := range h.Streams() {
		if s.ID == id {
			return s
		}
	}
	return StreamStats{}
}

// The frame counter is drawn as 8 blocks of 16x16 along the top edge,
// white for 1: it survives any sane encoder and tells decoded frames apart.
const counterBits = 8

func counterFrame(w, h, n int) []byte {
	p := mediatest.Pattern(w, h, n)
	for b := 0; b < counterBits; b++ {
		v := byte(0)
		if n>>b&1 == 1 {
			v = 255
		}
		for y := 0; y < 16; y++ {
			for x := b * 16; x < b*16+16; x++ {
				o := (y*w + x) * 3
				p[o], p[o+1], p[o+2] = v, v, v
			}
		}
	}
	return p
}

func readCounter(f *decode.Frame) int {
	n := 0
	for b := 0; b < counterBits; b++ {
		sum := 0
		for y := 4; y < 12; y++ {
			for x := b*16 + 4; x < b*16+12; x++ {
				o := (y*f.Width + x) * 3
				sum += int(f.RGB[o]) + int(f.RGB[o+1]) + int(f.RGB[o+2])
			}
		}
		if sum/(8*8*3) > 128 {
			n |= 1 << b
		}
	}
	return n
}

// isKeyframe tells keyframes from RTP payloads: an H.264 IDR or SPS (also
// inside STAP-A or a starting FU-A), a VP8 key frame.
func isKeyframe(c encode.Codec, payload []byte) bool {
	if len(payload) < 2 {
		return false
	}
	if c == encode.VP8 {
		var vp codecs.VP8Packet
		if _, err := vp.Unmarshal(payload); err != nil || vp.S != 1 || vp.PID != 0 || len(vp.Payload) == 0 {
			return false
		}
		return vp.Payload[0]&1 == 0
	}
	switch nal := payload[0] & 0x1f; nal {
	case 5, 7:
		return true
	case 24:
		for i := 1; i+2 < len(payload); {
			size := int(payload[i])<<8 | int(payload[i+1])
			if t := payload[i+2] & 0x1f; t == 5 || t == 7 {
				return true
			}
			i += 2 + size
		}
	case 28:
		return payload[1]&0x80 != 0 && payload[1]&0x1f == 5
	}
	return false
}

// TestWHEPVideoAndDetections publishes frames that carry their number in
// pixels to a real pion WHEP client, for each codec, and checks: the answer
// carries a loopback host candidate; the first frame is a keyframe; a PLI
// gets a keyframe at the next frame; every frame arrives (RTP frames
// counted, then the received stream decoded and each picture's number
// read back); every detection message arrives, in order, naming its
// frame's RTP timestamp.
func TestWHEPVideoAndDetections(t *testing.T) {
	for _, c := range []encode.Codec{encode.H264, encode.VP8} {
		t.Run(string(c), func(t *testing.T) { testVideoAndDetections(t, c) })
	}
}

func testVideoAndDetections(t *testing.T, c encode.Codec) {
	const w, h, n, half = 128, 96, 40, 20
	const step = time.Second / 30
	hub, base := startHub(t, HubConfig{})
	if err := hub.AddStream("cam", encode.EncoderConfig{Codec: c}); err != nil {
		t.Fatal(err)
	}

	path := filepath.Join(t.TempDir(), "received."+map[encode.Codec]string{encode.H264: "h264", encode.VP8: "ivf"}[c])
	var writer interface {
		WriteRTP(*rtp.Packet) error
		Close() error
	}
	var err error
	if c == encode.H264 {
		writer, err = h264writer.New(path)
	} else {
		writer, err = ivfwriter.New(path, ivfwriter.WithCodec(webrtc.MimeTypeVP8))
	}
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		frameTS   []uint32 // RTP timestamps of completed frames (marker bit)
		keyTS     []uint32
		writeErr  error
		lastKeyTS = map[uint32]bool{}
	)
	onRTP := func(p *rtp.Packet) {
		mu.Lock()
		defer mu.Unlock()
		if err := writer.WriteRTP(p); err != nil && writeErr == nil {
			writeErr = err
		}
		if isKeyframe(c, p.Payload) && !lastKeyTS[p.Timestamp] {
			lastKeyTS[p.Timestamp] = true
			keyTS = append(keyTS, p.Timestamp)
		}
		if p.Marker {
			frameTS = append(frameTS, p.Timestamp)
		}
	}
	frames := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(frameTS)
	}

	v, err := dialViewer(base, "cam", onRTP)
	if err != nil {
		t.Fatal(err)
	}
	defer v.PC.Close()
	if !strings.Contains(v.Answer, " 127.0.0.1 ") || !strings.Contains(v.Answer, "typ host") {
		t.Fatalf("answer lacks a 127.0.0.1 host candidate:\n%s", v.Answer)
	}
	if strings.Contains(v.Answer, "VP8") != (c == encode.VP8) || strings.Contains(v.Answer, "H264") != (c == encode.H264) {
		t.Fatalf("answer should name only %s:\n%s", c, v.Answer)
	}
	waitChan(t, "connected", v.Connected)
	waitChan(t, "the server's hello on the data channel", v.Hello)
	poll.Until(t, "the viewer in the fan-out", 5*time.Second, func() bool { return streamStats(hub, "cam").Viewers == 1 })

	publish := func(from, to int) {
		for i := from; i < to; i++ {
			sum := Summary{Count: i % 3, Labels: []LabelScore{}}
			for k := 0; k < i%3; k++ {
				sum.Labels = append(sum.Labels, LabelScore{Label: fmt.Sprintf("thing%d", k), Score: 0.5})
			}
			if err := hub.Publish("cam", w, h, counterFrame(w, h, i), time.Duration(i)*step, sum); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	publish(0, half)
	poll.Until(t, fmt.Sprintf("%d frames", half), 10*time.Second, func() bool { return frames() >= half })

	tr := <-v.Track
	if err := v.PC.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(tr.SSRC())}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the PLI at the hub", 5*time.Second, func() bool { return streamStats(hub, "cam").KeyRequests >= 1 })
	publish(half, n)
	poll.Until(t, fmt.Sprintf("%d frames", n), 10*time.Second, func() bool { return frames() >= n })

	var msgs []detectionsMessage
	poll.Until(t, fmt.Sprintf("%d detection messages", n), 10*time.Second, func() bool {
		for {
			select {
			case b := <-v.Messages:
				var m detectionsMessage
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatalf("detections message %s: %v", b, err)
				}
				msgs = append(msgs, m)
			default:
				return len(msgs) >= n
			}
		}
	})

	if code, err := v.Delete(); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE session: %d, %v", code, err)
	}
	v.PC.Close()
	waitChan(t, "the RTP reader to end", v.TrackDone)
	mu.Lock()
	defer mu.Unlock()
	if err := writer.Close(); err != nil || writeErr != nil {
		t.Fatalf("writing the received stream: %v, %v", writeErr, err)
	}

	if len(frameTS) != n {
		t.Fatalf("received %d RTP frames, want %d", len(frameTS), n)
	}
	for i := 1; i < n; i++ {
		if d := frameTS[i] - frameTS[i-1]; d != uint32(encode.ToTicks(step)) {
			t.Fatalf("RTP timestamps %d and %d differ by %d ticks, want %d", i-1, i, d, encode.ToTicks(step))
		}
	}
	if len(keyTS) != 2 || keyTS[0] != frameTS[0] || keyTS[1] != frameTS[half] {
		t.Fatalf("keyframes at RTP timestamps %v, want the first frame and frame %d (%d, %d)", keyTS, half, frameTS[0], frameTS[half])
	}
	st := streamStats(hub, "cam")
	if st.Frames != n || st.Encoded != n || st.Keyframes != 2 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want %d frames all encoded, 2 keyframes, none dropped", st, n)
	}

	for i, m := range msgs {
		if m.Seq != int64(i) || m.Stream != "cam" || m.Count != i%3 || len(m.Labels) != i%3 {
			t.Fatalf("message %d is %+v, want seq %d with %d labels", i, m, i, i%3)
		}
		if m.RTPTimestamp == nil || *m.RTPTimestamp != frameTS[i] {
			t.Fatalf("message %d names RTP timestamp %v, frame %d has %d", i, m.RTPTimestamp, i, frameTS[i])
		}
		if m.SentMs <= 0 || m.PTSms != float64(time.Duration(i)*step)/float64(time.Millisecond) {
			t.Fatalf("message %d has sent_ms %v, pts_ms %v", i, m.SentMs, m.PTSms)
		}
	}

	format := map[encode.Codec]string{encode.H264: "h264", encode.VP8: "ivf"}[c]
	d, err := decode.Open(path, decode.Options{Format: format})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var got []int
	for {
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode the received stream: %v", err)
		}
		if f.Width != w || f.Height != h {
			t.Fatalf("decoded %dx%d, want %dx%d", f.Width, f.Height, w, h)
		}
		got = append(got, readCounter(f))
	}
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("decoded frame numbers %v, want %v", got, want)
	}
}

// minimalOffer is what a browser would send, cut to the parts that count.
func minimalOffer(t *testing.T) string {
	t.Helper()
	api, err := NewAPI(WebRTCConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer.SDP
}

// TestWHEPHTTPErrors checks every refusal: status, and a message saying
// why.
func TestWHEPHTTPErrors(t *testing.T) {
	hub, base := startHub(t, HubConfig{})
	if err := hub.AddStream("cam", encode.EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	offer := minimalOffer(t)
	vp8Only := strings.NewReplacer("H264/90000", "X264/90000").Replace(offer)
	sendOnly := strings.ReplaceAll(offer, "a=recvonly", "a=sendonly")
	var noFingerprint []string
	for _, l := range strings.SplitAfter(offer, "\n") {
		if !strings.HasPrefix(l, "a=fingerprint") {
			noFingerprint = append(noFingerprint, l)
		}
	}
	for _, c := range []struct {
		name, method, path, ctype, body string
		code                            int
		msg                             string
	}{
		{"unknown stream", "POST", "/whep/nope", "application/sdp", offer, 404, "no stream"},
		{"wrong content type", "POST", "/whep/cam", "text/plain", offer, 415, "application/sdp"},
		{"no content type", "POST", "/whep/cam", "", offer, 415, "application/sdp"},
		{"malformed SDP", "POST", "/whep/cam", "application/sdp", "hello, I am not SDP", 400, "malformed SDP"},
		{"empty body", "POST", "/whep/cam", "application/sdp", "", 400, "empty offer"},
		{"oversized body", "POST", "/whep/cam", "application/sdp", offer + strings.Repeat("a=x-pad:0123456789\r\n", 4000), 413, "limit"},
		{"no video", "POST", "/whep/cam", "application/sdp", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "no video"},
		{"codec missing", "POST", "/whep/cam", "application/sdp", vp8Only, 400, "no H.264"},
		{"sendonly video", "POST", "/whep/cam", "application/sdp", sendOnly, 400, "sendonly"},
		{"no DTLS fingerprint", "POST", "/whep/cam", "application/sdp", strings.Join(noFingerprint, ""), 400, "offer rejected"},
		{"GET on endpoint", "GET", "/whep/cam", "", "", 405, "POST"},
		{"trickle ICE", "PATCH", "/whep/cam/abc", "application/trickle-ice-sdpfrag", "a=candidate", 405, "trickle ICE"},
		{"unknown session", "DELETE", "/whep/cam/abc", "", "", 404, "no such session"},
		{"POST on streams", "POST", "/streams", "application/json", "{}", 405, "GET"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			res, err := testClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != c.code || !strings.Contains(string(body), c.msg) || len(bytes.TrimSpace(body)) == 0 {
				t.Fatalf("%s %s: %d %q, want %d with %q", c.method, c.path, res.StatusCode, body, c.code, c.msg)
			}
			// Other origins are the Server's to allow (server_test.go); the
			// hub alone allows none, and never any origin at all.
			if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
				t.Fatalf("%s %s allows origin %q", c.method, c.path, got)
			}
		})
	}

	if n := hub.Sessions(); n != 0 {
		t.Fatalf("%d sessions left by refused offers", n)
	}

	t.Run("preflight", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, base+"/whep/cam", nil)
		req.Header.Set("Origin", "http://elsewhere.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		res, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		hd := res.Header
		if res.StatusCode != http.StatusNoContent || hd.Get("Access-Control-Allow-Origin") != "" ||
			!strings.Contains(hd.Get("Access-Control-Allow-Methods"), "DELETE") ||
			!strings.Contains(hd.Get("Access-Control-Allow-Headers"), "Authorization") ||
			hd.Get("Access-Control-Expose-Headers") != "Location" {
			t.Fatalf("preflight: %d %v", res.StatusCode, hd)
		}
	})

	t.Run("DELETE twice", func(t *testing.T) {
		v, err := dialViewer(base, "cam", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer v.PC.Close()
		if code, err := v.Delete(); err != nil || code != http.StatusOK {
			t.Fatalf("first DELETE: %d, %v", code, err)
		}
		if code, err := v.Delete(); err != nil || code != http.StatusNotFound {
			t.Fatalf("second DELETE: %d, %v; want 404", code, err)
		}
		if n := hub.Sessions(); n != 0 {
			t.Fatalf("%d sessions left", n)
		}
	})

	t.Run("streams and page", func(t *testing.T) {
		if err := hub.Publish("cam", 32, 16, make([]byte, 32*16*3), 0, Summary{}); err != nil {
			t.Fatal(err)
		}
		res, err := testClient.Get(base + "/streams")
		if err != nil {
			t.Fatal(err)
		}
		var list []StreamStats
		err = json.NewDecoder(res.Body).Decode(&list)
		res.Body.Close()
		if err != nil || len(list) != 1 || list[0].ID != "cam" || list[0].Codec != encode.H264 || list[0].Frames != 1 || list[0].Width != 32 {
			t.Fatalf("GET /streams: %v %+v", err, list)
		}
		for _, p := range []string{"/", "/viewer.js", "/viewer.css"} {
			res, err := testClient.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || len(body) < 100 {
				t.Fatalf("GET %s: %d, %d bytes", p, res.StatusCode, len(body))
			}
		}
	})

	t.Run("too many viewers", func(t *testing.T) {
		small, base := startHub(t, HubConfig{MaxViewers: 1})
		if err := small.AddStream("cam", encode.EncoderConfig{}); err != nil {
			t.Fatal(err)
		}
		v, err := dialViewer(base, "cam", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer v.PC.Close()
		if _, err := dialViewer(base, "cam", nil); err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("second viewer over the limit of 1: %v, want 503", err)
		}
	})
}

// TestViewersComeAndGoWithoutLeaks connects 50 viewers, five at a time,
// while frames flow; most leave with DELETE, every tenth just vanishes
// (its peer connection closed, no DELETE) and must be closed by the
// server's disconnect timeouts. Afterwards no session is left and the
// goroutine count is back where it started.
func TestViewersComeAndGoWithoutLeaks(t *testing.T) {
	hub, base := startHub(t, HubConfig{
		WebRTC:            WebRTCConfig{ICEDisconnectedTimeout: time.Second},
		DisconnectTimeout: 300 * time.Millisecond,
	})
	if err := hub.AddStream("cam", encode.EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	before := runtime.NumGoroutine()

	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	var published atomic.Int64
	go func() {
		defer pubWG.Done()
		const w, h = 64, 48
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := hub.Publish("cam", w, h, mediatest.Pattern(w, h, i), time.Duration(i)*20*time.Millisecond, Summary{Count: 1, Labels: []LabelScore{{Label: "x", Score: 1}}}); err != nil {
				t.Error(err)
				return
			}
			published.Add(1)
		}
	}()

	const total, together = 50, 5
	var vanished atomic.Int64
	for round := 0; round < total/together; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, together)
		for k := 0; k < together; k++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				v, err := dialViewer(base, "cam", nil)
				if err != nil {
					errs <- fmt.Errorf("viewer %d: %w", i, err)
					return
				}
				defer v.PC.Close()
				select {
				case <-v.Connected:
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("viewer %d never connected", i)
					return
				}
				if i%10 == 9 {
					vanished.Add(1)
					return
				}
				// Watch at least one frame's detections before leaving.
				select {
				case <-v.Messages:
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("viewer %d got no detections", i)
					return
				}
				if code, err := v.Delete(); err != nil || code != http.StatusOK {
					errs <- fmt.Errorf("viewer %d: DELETE: %d, %v", i, code, err)
				}
			}(round*together + k)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	poll.Until(t, "the vanished viewers' sessions to close", 15*time.Second, func() bool { return hub.Sessions() == 0 })
	close(stop)
	pubWG.Wait()
	if st := streamStats(hub, "cam"); st.Viewers != 0 || st.Sessions != 0 {
		t.Fatalf("after all left: %+v", st)
	}
	if vanished.Load() != total/10 {
		t.Fatalf("%d viewers vanished, want %d", vanished.Load(), total/10)
	}

	// pion ends some goroutines shortly after Close returns.
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= before+2 {
			t.Logf("goroutines: %d before, %d after %d viewers (%d frames published)", before, n, total, published.Load())
			return
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("goroutines: %d before, %d after the viewers left:\n%s", before, n, buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRemoveStreamEndsSessions: a removed stream takes its viewers along
// and is gone for new ones.
func TestRemoveStreamEndsSessions(t *testing.T) {
	hub, base := startHub(t, HubConfig{})
	if err := hub.AddStream("cam", encode.EncoderConfig{Codec: encode.VP8}); err != nil {
		t.Fatal(err)
	}
	v, err := dialViewer(base, "cam", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.PC.Close()
	waitChan(t, "connected", v.Connected)
	hub.RemoveStream("cam")
	if n := hub.Sessions(); n != 0 {
		t.Fatalf("%d sessions after RemoveStream", n)
	}
	if _, err := dialViewer(base, "cam", nil); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("offer to a removed stream: %v, want 404", err)
	}
}
