// Package rtsptest is a real RTSP server (gortsplib) for tests: it plays an
// H.264 clip made by the ffmpeg CLI in a loop at its frame rate, as a
// camera does, over TCP and UDP on loopback.
package rtsptest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
)

// Clip is an H.264 elementary stream cut into access units.
type Clip struct {
	sps, pps []byte
	aus      [][][]byte // NAL units of each access unit, without delimiters
	w, h     int
}

// MakeClip encodes a short test pattern with the ffmpeg CLI. Every
// keyframe (one each half second) repeats SPS and PPS and every access unit
// starts with a delimiter, so the stream can be looped and cut into access
// units without parsing slices.
func MakeClip(t *testing.T, w, h, fps, frames int) *Clip {
	t.Helper()
	return MakeClipGOP(t, w, h, fps, frames, fps/2)
}

// MakeClipGOP is MakeClip with a keyframe every gop frames.
func MakeClipGOP(t *testing.T, w, h, fps, frames, gop int) *Clip {
	t.Helper()
	return MakeClipFrom(t, []string{"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=s=%dx%d:r=%d", w, h, fps)}, w, h, frames, gop)
}

// MakeClipFrom encodes frames frames of the ffmpeg input input (its
// arguments, e.g. -i FILE) at w x h, with a keyframe every gop frames.
func MakeClipFrom(t *testing.T, input []string, w, h, frames, gop int) *Clip {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.h264")
	args := append([]string{"-hide_banner", "-loglevel", "error"}, input...)
	args = append(args, "-vf", fmt.Sprintf("scale=%d:%d", w, h),
		"-frames:v", strconv.Itoa(frames), "-c:v", "libx264", "-profile:v", "baseline",
		"-pix_fmt", "yuv420p", "-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop), "-sc_threshold", "0",
		"-x264-params", "aud=1:repeat-headers=1",
		"-f", "h264", "-y", out)
	if b, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %v: %v\n%s", args, err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	c := &Clip{w: w, h: h}
	var au [][]byte
	for _, nalu := range splitAnnexB(data) {
		switch nalu[0] & 0x1f {
		case 9: // access unit delimiter
			if len(au) > 0 {
				c.aus = append(c.aus, au)
			}
			au = nil
			continue
		case 7:
			if c.sps == nil {
				c.sps = nalu
			}
		case 8:
			if c.pps == nil {
				c.pps = nalu
			}
		}
		au = append(au, nalu)
	}
	if len(au) > 0 {
		c.aus = append(c.aus, au)
	}
	if c.sps == nil || c.pps == nil || len(c.aus) != frames {
		t.Fatalf("clip: sps %v pps %v, %d access units of %d", c.sps != nil, c.pps != nil, len(c.aus), frames)
	}
	return c
}

// splitAnnexB cuts a byte stream at its 00 00 01 start codes.
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i+3 <= len(b); {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if start >= 0 {
				out = append(out, bytes.TrimRight(b[start:i], "\x00"))
			}
			i += 3
			start = i
			continue
		}
		i++
	}
	if start >= 0 && start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

// Server is a real RTSP server (gortsplib) playing an H.264 clip in a
// loop at its frame rate on /cam, over TCP and UDP, optionally behind
// digest/basic authentication. It can be stopped and started again on the
// same ports, as a camera that reboots.
type Server struct {
	t          *testing.T
	clip       *Clip
	fps        int
	user, pass string

	port, rtpPort int
	// Frozen stops the packets but keeps every connection: a camera that
	// hangs without closing anything.
	Frozen atomic.Bool

	mu     sync.Mutex
	srv    *gortsplib.Server
	stream *gortsplib.ServerStream
	media  *description.Media
	nonce  string
	stop   chan struct{}
	done   chan struct{}
}

func StartServer(t *testing.T, clip *Clip, fps int, user, pass string) *Server {
	t.Helper()
	s := &Server{t: t, clip: clip, fps: fps, user: user, pass: pass, rtpPort: freeUDPPair(t)}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// URL is the server's address with path.
func (s *Server) URL(path string) string {
	return "rtsp://127.0.0.1:" + strconv.Itoa(s.port) + path
}

// Start starts the server again after Close, on the same ports.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return
	}
	nonce, err := auth.GenerateNonce()
	if err != nil {
		s.t.Fatal(err)
	}
	s.nonce = nonce
	srv := &gortsplib.Server{
		Handler:        s,
		RTSPAddress:    "127.0.0.1:" + strconv.Itoa(s.port),
		UDPRTPAddress:  "127.0.0.1:" + strconv.Itoa(s.rtpPort),
		UDPRTCPAddress: "127.0.0.1:" + strconv.Itoa(s.rtpPort+1),
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				s.port = ln.Addr().(*net.TCPAddr).Port
			}
			return ln, err
		},
	}
	// A restart may find the old ports busy for a moment.
	for i := 0; ; i++ {
		if err = srv.Start(); err == nil {
			break
		}
		if i == 20 {
			s.t.Fatalf("rtsp server on port %d: %v", s.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.media = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
		PayloadTyp: 96, SPS: s.clip.sps, PPS: s.clip.pps, PacketizationMode: 1,
	}}}
	s.srv = srv
	s.stream = gortsplib.NewServerStream(srv, &description.Session{Medias: []*description.Media{s.media}})
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.play(s.stream, s.media, s.stop, s.done)
}

// play writes the clip's access units as RTP at the clip's frame rate.
func (s *Server) play(stream *gortsplib.ServerStream, media *description.Media, stop, done chan struct{}) {
	defer close(done)
	enc, err := media.Formats[0].(*format.H264).CreateEncoder()
	if err != nil {
		s.t.Errorf("rtp encoder: %v", err)
		return
	}
	tick := time.NewTicker(time.Second / time.Duration(s.fps))
	defer tick.Stop()
	ts := uint32(123456)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if s.Frozen.Load() {
			continue
		}
		pkts, err := enc.Encode(s.clip.aus[i%len(s.clip.aus)])
		if err != nil {
			s.t.Errorf("rtp encode: %v", err)
			return
		}
		for _, p := range pkts {
			p.Timestamp = ts
			// A stream closed under us just ends the loop on the next tick.
			_ = stream.WritePacketRTP(media, p)
		}
		ts += uint32(90000 / s.fps)
	}
}

// Close stops the server and every connection it has, as a camera losing
// power; Start brings it back on the same ports.
func (s *Server) Close() {
	s.mu.Lock()
	srv, stream, stop, done := s.srv, s.stream, s.stop, s.done
	s.srv, s.stream = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	close(stop)
	<-done
	stream.Close()
	srv.Close()
}

func (s *Server) authorized(req *base.Request) *base.Response {
	if s.user == "" {
		return nil
	}
	// Digest with MD5, as IP cameras ask: FFmpeg 5.1 knows no SHA-256
	// digest and takes the last challenge offered, so offer this one alone.
	methods := []auth.ValidateMethod{auth.ValidateMethodDigestMD5}
	if err := auth.Validate(req, s.user, s.pass, methods, "htcstream-test", s.nonce); err != nil {
		return &base.Response{StatusCode: base.StatusUnauthorized, Header: base.Header{
			"WWW-Authenticate": auth.GenerateWWWAuthenticate(methods, "htcstream-test", s.nonce),
		}}
	}
	return nil
}

func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res := s.authorized(ctx.Request); res != nil {
		return res, nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Trim(ctx.Path, "/") != "cam" || s.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, s.stream, nil
}

func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Trim(ctx.Path, "/") != "cam" || s.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, s.stream, nil
}

func (s *Server) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// freeUDPPair finds an even port whose successor is free too, as RTP and
// RTCP over UDP want.
func freeUDPPair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := a.LocalAddr().(*net.UDPAddr).Port
		if p%2 != 0 || p > 65000 {
			a.Close()
			continue
		}
		b, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p+1))
		a.Close()
		if err == nil {
			b.Close()
			return p
		}
	}
	t.Fatal("no free even UDP port pair on 127.0.0.1")
	return 0
}
