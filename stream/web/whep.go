package web

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v3"

	"github.com/htcstream/htcstream/stream/encode"
)

// The viewer page: plain HTML, CSS and JS, no external assets, so the
// binary serves it on a closed network.
//
//go:embed viewer
var viewerFiles embed.FS

// The HTTP surface (WHEP is RFC 9725):
//
//	GET  /                          the viewer page
//	GET  /streams                   JSON list of StreamStats
//	POST /whep/{stream}             SDP offer in, 201 + SDP answer out,
//	                                Location: /whep/{stream}/{session}
//	DELETE /whep/{stream}/{session} ends the session
//	OPTIONS on both                 CORS preflight
//	PATCH /whep/{stream}/{session}  405: no trickle ICE, the offer must
//	                                carry its candidates
//
// Detections: with WHEP the client makes the offer, so a client that wants
// detections creates a data channel labelled "detections" before its offer
// and the hub takes it up. The client's choice of delivery stands; the
// bundled page asks for ordered delivery without retransmissions, so a
// message is never late behind a lost one for long and never arrives
// stale. On it the hub sends {"type":"hello",...} once open, then one
// detectionsMessage a frame.
func (h *Hub) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/whep/{stream}", h.handleEndpoint)
	mux.HandleFunc("/whep/{stream}/{session}", h.handleSession)
	mux.HandleFunc("/streams", h.handleStreams)
	sub, err := fs.Sub(viewerFiles, "viewer")
	if err != nil {
		// The embedded tree is fixed at build time; this cannot happen.
		sub = viewerFiles
	}
	files := http.FileServerFS(sub)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !readOnly(w, r) {
			return
		}
		files.ServeHTTP(w, r)
	})
	return mux
}

// ServeHTTP serves the viewer page, GET /streams and the WHEP endpoint.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// cors exposes Location, which a client needs to DELETE its session.
// Which other origins may call the endpoint at all is the Server's choice
// (ServerConfig.AllowedOrigins): the hub alone allows none.
func cors(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Expose-Headers", "Location")
}

func preflight(w http.ResponseWriter) {
	w.Header().Set("Access-Control-Allow-Methods", "POST, DELETE, OPTIONS")
	w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
	w.Header().Set("Access-Control-Max-Age", "86400")
	w.Header().Set("Accept-Post", "application/sdp")
	w.WriteHeader(http.StatusNoContent)
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "method not allowed here; allowed: "+allow, http.StatusMethodNotAllowed)
}

// readOnly answers anything but GET and HEAD with 405 and says whether r
// may go on.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	methodNotAllowed(w, "GET, HEAD")
	return false
}

func (h *Hub) handleStreams(w http.ResponseWriter, r *http.Request) {
	cors(w)
	if !readOnly(w, r) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(h.Streams())
}

func (h *Hub) handleEndpoint(w http.ResponseWriter, r *http.Request) {
	cors(w)
	switch r.Method {
	case http.MethodOptions:
		preflight(w)
	case http.MethodPost:
		h.handleOffer(w, r)
	default:
		methodNotAllowed(w, "POST, OPTIONS")
	}
}

func (h *Hub) handleOffer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("stream")
	if h.stream(id) == nil {
		http.Error(w, fmt.Sprintf("no stream %q (GET /streams lists them)", id), http.StatusNotFound)
		return
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/sdp" {
		http.Error(w, fmt.Sprintf("Content-Type must be application/sdp, not %q", ct), http.StatusUnsupportedMediaType)
		return
	}
	limit := h.cfg.MaxOfferBytes
	if r.ContentLength > limit {
		http.Error(w, fmt.Sprintf("offer of %d bytes is over the limit of %d", r.ContentLength, limit), http.StatusRequestEntityTooLarge)
		return
	}
	offer, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("offer is over the limit of %d bytes", limit), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the offer: "+err.Error(), http.StatusBadRequest)
		return
	}
	s, answer, err := h.newSession(r.Context(), id, offer)
	if err != nil {
		code := http.StatusInternalServerError
		var he *httpError
		if errors.As(err, &he) {
			code = he.code
		}
		if code >= 500 {
			h.log.Warn("whep offer failed", "stream", id, "err", err)
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+id+"/"+s.id)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

func (h *Hub) handleSession(w http.ResponseWriter, r *http.Request) {
	cors(w)
	switch r.Method {
	case http.MethodOptions:
		preflight(w)
	case http.MethodDelete:
		h.mu.Lock()
		s := h.sessions[r.PathValue("session")]
		h.mu.Unlock()
		if s == nil || s.stream.id != r.PathValue("stream") {
			http.Error(w, "no such session (it ended, or never existed)", http.StatusNotFound)
			return
		}
		s.close("ended by the client (DELETE)")
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		w.Header().Set("Allow", "DELETE, OPTIONS")
		http.Error(w, "trickle ICE is not supported: send the offer once ICE gathering is complete, with its candidates", http.StatusMethodNotAllowed)
	default:
		methodNotAllowed(w, "DELETE, OPTIONS")
	}
}

// httpError is an error with the HTTP status it answers.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

var errClosedInSetup = &httpError{http.StatusServiceUnavailable, "the session was closed while being set up (hub shutting down or stream removed)"}

func badOffer(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// checkOffer reports why an offer cannot receive codec c's video, before
// any peer connection is made for it.
func checkOffer(raw []byte, c encode.Codec) error {
	if len(raw) == 0 {
		return badOffer("empty offer: the body must be an SDP offer")
	}
	var d sdp.SessionDescription
	if err := d.Unmarshal(raw); err != nil {
		return badOffer("malformed SDP offer: %v", err)
	}
	var video *sdp.MediaDescription
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media == "video" && m.MediaName.Port.Value != 0 {
			video = m
			break
		}
	}
	if video == nil {
		return badOffer("the offer has no video section: a WHEP client adds a recvonly video transceiver before its offer")
	}
	for _, dir := range []string{"sendonly", "inactive"} {
		if _, ok := video.Attribute(dir); ok {
			return badOffer("the offer's video is %s: a WHEP viewer receives video (recvonly)", dir)
		}
	}
	var offered []string
	for _, f := range video.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 8)
		if err != nil {
			continue
		}
		k, err := d.GetCodecForPayloadType(uint8(pt))
		if err != nil {
			continue
		}
		offered = append(offered, k.Name)
		if codecMatches(k, c) {
			return nil
		}
	}
	want := "H.264 (packetization-mode=1, constrained baseline profile-level-id 42e0xx)"
	if c == encode.VP8 {
		want = "VP8"
	}
	return badOffer("the offer's video has no %s, which this stream sends (offered: %s)", want, strings.Join(offered, " "))
}

// codecMatches follows pion's own matching, so an offer that passes here
// negotiates: H.264 must agree on packetization mode and on the profile
// (profile_idc and constraint flags).
func codecMatches(k sdp.Codec, c encode.Codec) bool {
	switch {
	case c == encode.VP8:
		return strings.EqualFold(k.Name, "VP8")
	case !strings.EqualFold(k.Name, "H264"):
		return false
	}
	params := map[string]string{}
	for _, kv := range strings.Split(k.Fmtp, ";") {
		if key, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok {
			params[strings.ToLower(key)] = v
		}
	}
	plid := params["profile-level-id"]
	return params["packetization-mode"] == "1" && len(plid) >= 4 && strings.EqualFold(plid[:4], "42e0")
}

// session is one WHEP viewer: a peer connection that sends one stream's
// video and detections.
type session struct {
	id     string
	hub    *Hub
	stream *hubStream
	log    *slog.Logger
	pc     *webrtc.PeerConnection
	track  *webrtc.TrackLocalStaticRTP

	queue chan item
	quit  chan struct{}
	wg    sync.WaitGroup // the writer and the RTCP reader
	once  sync.Once
	ended chan struct{} // closed when close has finished

	// dc is the client's "detections" channel once it is open.
	dc atomic.Pointer[webrtc.DataChannel]

	mu        sync.Mutex // guards closing, active, the timers and pc
	closing   bool
	active    bool
	connTimer *time.Timer
	discTimer *time.Timer

	// pendingGap is Publish's: a frame was dropped since the last one
	// queued (guarded by the stream's pub lock).
	pendingGap bool

	// The writer goroutine's own.
	pk      rtp.Packetizer
	tsBase  uint32
	waitKey bool

	sent, dropped, dcDropped atomic.Int64
	started                  time.Time
}

func newSessionID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// maxDCBuffered bounds what waits in a viewer's data channel: past it,
// detection messages are dropped for that viewer (they are stale by then,
// and pion's send buffer would otherwise grow without bound for a viewer
// that stopped reading).
const maxDCBuffered = 256 << 10

// newSession answers an offer for stream id. The answer is complete (ICE
// gathering done, or GatherTimeout passed), as WHEP without trickle ICE
// needs.
func (h *Hub) newSession(ctx context.Context, id string, offer []byte) (*session, string, error) {
	st := h.stream(id)
	if st == nil {
		return nil, "", &httpError{http.StatusNotFound, fmt.Sprintf("no stream %q", id)}
	}
	if err := checkOffer(offer, st.enc.Codec); err != nil {
		return nil, "", err
	}
	sid, err := newSessionID()
	if err != nil {
		return nil, "", fmt.Errorf("session id: %w", err)
	}
	s := &session{
		id: sid, hub: h, stream: st,
		log:     h.log.With("stream", id, "session", sid[:8]),
		queue:   make(chan item, h.cfg.ViewerQueue),
		quit:    make(chan struct{}),
		ended:   make(chan struct{}),
		waitKey: true,
		started: time.Now(),
	}
	// Registered before the peer connection exists, so every later path,
	// including pion's callbacks, finds it to close.
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		return nil, "", &httpError{http.StatusServiceUnavailable, "the hub is shutting down"}
	case h.streams[id] != st:
		h.mu.Unlock()
		return nil, "", &httpError{http.StatusNotFound, fmt.Sprintf("no stream %q", id)}
	case len(h.sessions) >= h.cfg.MaxViewers:
		h.mu.Unlock()
		return nil, "", &httpError{http.StatusServiceUnavailable, fmt.Sprintf("too many viewers (limit %d); try again later", h.cfg.MaxViewers)}
	}
	h.sessions[sid] = s
	h.mu.Unlock()

	answer, err := s.start(ctx, offer)
	if err != nil {
		s.close("setup failed")
		return nil, "", err
	}
	s.log.Info("webrtc viewer session opened")
	return s, answer, nil
}

func (s *session) start(ctx context.Context, offer []byte) (string, error) {
	h := s.hub
	pc, err := h.api.NewPeerConnection(PeerConfiguration(h.cfg.WebRTC))
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	s.mu.Lock()
	if s.closing {
		// Closed (hub shut down, stream removed) before it had a peer
		// connection to close.
		s.mu.Unlock()
		pc.Close()
		return "", errClosedInSetup
	}
	s.pc = pc
	s.mu.Unlock()
	codec := s.stream.enc.Codec
	s.track, err = webrtc.NewTrackLocalStaticRTP(codecCapability(codec), "video", s.stream.id)
	if err != nil {
		return "", fmt.Errorf("new track: %w", err)
	}
	sender, err := pc.AddTrack(s.track)
	if err != nil {
		return "", fmt.Errorf("add track: %w", err)
	}
	for _, t := range pc.GetTransceivers() {
		if t.Sender() == sender {
			// The answer then names only the stream's codec, whatever else
			// the offer lists.
			if err := t.SetCodecPreferences([]webrtc.RTPCodecParameters{{RTPCodecCapability: codecCapability(codec)}}); err != nil {
				return "", fmt.Errorf("codec preferences: %w", err)
			}
		}
	}
	var payloader rtp.Payloader = &codecs.H264Payloader{}
	if codec == encode.VP8 {
		payloader = &codecs.VP8Payloader{EnablePictureID: true}
	}
	// The packetizer's payload type and SSRC are not the real ones: the track
	// writes each packet with the negotiated ones.
	s.pk = rtp.NewPacketizer(1200, 0, 0, payloader, rtp.NewRandomSequencer(), encode.TickRate)
	var b [4]byte
	rand.Read(b[:])
	s.tsBase = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])

	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != "detections" {
			return
		}
		dc.OnOpen(func() {
			s.dc.Store(dc)
			hello, _ := json.Marshal(map[string]any{"type": "hello", "stream": s.stream.id, "session": s.id, "codec": codec})
			dc.SendText(string(hello))
		})
		dc.OnClose(func() { s.dc.CompareAndSwap(dc, nil) })
	})
	pc.OnConnectionStateChange(s.onState)

	// Started under mu so close either waits for them or sees them never
	// start.
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return "", errClosedInSetup
	}
	s.wg.Add(2)
	go s.write()
	go s.readRTCP(sender)
	s.mu.Unlock()

	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return "", badOffer("offer rejected: %v", err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", badOffer("cannot answer the offer: %v", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	t := time.NewTimer(h.cfg.GatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		s.log.Warn("ICE gathering not complete; answering with the candidates found so far", "after", h.cfg.GatherTimeout)
	case <-ctx.Done():
		return "", fmt.Errorf("client went away: %w", ctx.Err())
	}
	s.mu.Lock()
	if !s.closing {
		s.connTimer = time.AfterFunc(h.cfg.ConnectTimeout, func() {
			s.close(fmt.Sprintf("not connected within %v", h.cfg.ConnectTimeout))
		})
	}
	s.mu.Unlock()
	return pc.LocalDescription().SDP, nil
}

func (s *session) onState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing {
			return
		}
		stopTimer(&s.connTimer)
		stopTimer(&s.discTimer)
		if !s.active {
			s.active = true
			s.log.Info("webrtc viewer connected", "after", time.Since(s.started).Round(time.Millisecond))
			s.stream.addViewer(s)
		}
	case webrtc.PeerConnectionStateDisconnected:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closing || s.discTimer != nil {
			return
		}
		grace := s.hub.cfg.DisconnectTimeout
		s.discTimer = time.AfterFunc(grace, func() {
			if s.pc.ConnectionState() != webrtc.PeerConnectionStateConnected {
				s.close(fmt.Sprintf("disconnected for %v", grace))
			}
		})
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		s.close("connection " + st.String())
	}
}

func stopTimer(t **time.Timer) {
	if *t != nil {
		(*t).Stop()
		*t = nil
	}
}

// close ends the session: out of the fan-out and the hub, peer connection
// closed, goroutines finished. Every caller returns after it is done; it
// is safe from any goroutine, any number of times.
func (s *session) close(reason string) {
	s.once.Do(func() {
		defer close(s.ended)
		s.mu.Lock()
		s.closing = true
		stopTimer(&s.connTimer)
		stopTimer(&s.discTimer)
		pc := s.pc
		s.mu.Unlock()

		s.stream.retire(s)
		s.hub.mu.Lock()
		delete(s.hub.sessions, s.id)
		s.hub.mu.Unlock()
		close(s.quit)
		if pc != nil {
			if err := pc.Close(); err != nil {
				s.log.Debug("close peer connection", "err", err)
			}
		}
		s.wg.Wait()
		s.stream.droppedGone.Add(s.dropped.Swap(0))
		s.log.Info("webrtc viewer session closed", "reason", reason, "frames", s.sent.Load(),
			"detections_dropped", s.dcDropped.Load(), "lasted", time.Since(s.started).Round(time.Millisecond))
	})
	<-s.ended
}

// write delivers the viewer's queue: video as RTP, detections as data
// channel messages. Nothing here waits on the network for long: RTP goes
// to a UDP socket, and data channel sends only queue.
func (s *session) write() {
	defer s.wg.Done()
	for {
		select {
		case <-s.quit:
			return
		case it := <-s.queue:
			s.deliver(it)
		}
	}
}

// detectionsMessage is the JSON of one frame on the data channel.
type detectionsMessage struct {
	Type   string  `json:"type"` // "detections"
	Stream string  `json:"stream"`
	Seq    int64   `json:"seq"`
	PTSms  float64 `json:"pts_ms"`
	// SentMs is when Publish got the frame, Unix milliseconds: with the
	// presentation time of the frame whose RTP timestamp is RTPTimestamp,
	// a browser on the same clock measures the latency to its screen.
	SentMs float64 `json:"sent_ms"`
	// RTPTimestamp is the frame's timestamp on this viewer's video track;
	// absent when its video was not sent to this viewer.
	RTPTimestamp *uint32 `json:"rtp_ts,omitempty"`
	Summary
}

func (s *session) deliver(it item) {
	if it.gap {
		s.waitKey = true
	}
	f := it.f
	var ts *uint32
	for _, p := range f.video {
		if s.waitKey && !p.Keyframe {
			// Without the frames before it, this one would not decode.
			s.dropped.Add(1)
			continue
		}
		s.waitKey = false
		t := s.tsBase + uint32(encode.ToTicks(p.PTS))
		for _, rp := range s.pk.Packetize(p.Data, 0) {
			rp.Timestamp = t
			if err := s.track.WriteRTP(rp); err != nil {
				s.log.Debug("write rtp", "err", err)
				break
			}
		}
		s.sent.Add(1)
		ts = &t
	}
	dc := s.dc.Load()
	if dc == nil {
		return
	}
	if dc.BufferedAmount() > maxDCBuffered {
		s.dcDropped.Add(1)
		return
	}
	msg, err := json.Marshal(detectionsMessage{
		Type: "detections", Stream: s.stream.id, Seq: f.seq,
		PTSms:        float64(f.pts) / float64(time.Millisecond),
		SentMs:       float64(f.ready.UnixMicro()) / 1000,
		RTPTimestamp: ts,
		Summary:      f.sum,
	})
	if err != nil {
		s.log.Debug("detections message", "err", err)
		return
	}
	if err := dc.SendText(string(msg)); err != nil {
		s.dcDropped.Add(1)
	}
}

// readRTCP answers picture loss reports with keyframes; reading also lets
// pion's interceptors (NACK, reports) see the viewer's feedback.
func (s *session) readRTCP(sender *webrtc.RTPSender) {
	defer s.wg.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				s.stream.keyRequests.Add(1)
				s.stream.requestKey(false)
			}
		}
	}
}
