package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v3"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/stream/encode"
)

// Summary is what a viewer is told about one frame's detections. Labels
// holds at most MaxSummaryLabels entries; Count is the full number.
type Summary struct {
	Count  int          `json:"count"`
	Labels []LabelScore `json:"labels"`
	// Keyframe says whether the model saw this frame (true) or the tracker
	// carried the detections to it (false); absent where nothing
	// schedules the model.
	Keyframe *bool `json:"keyframe,omitempty"`
	// Still says the model skipped the frame because nothing moved.
	Still bool `json:"still,omitempty"`
}

// LabelScore is one detected instance as a viewer sees it.
type LabelScore struct {
	Label string  `json:"label"`
	Score float32 `json:"score"`
	// TrackID is the instance's track on a tracked camera; absent without.
	TrackID uint64 `json:"track_id,omitempty"`
	// StageScores are each cascade stage's own score for the label, shown
	// beside the ensemble's Score; absent when the model gave none.
	StageScores []float32 `json:"stage_scores,omitempty"`
	// Propagated: the tracker carried it to this frame; the model did not
	// see it here.
	Propagated bool `json:"propagated,omitempty"`
}

// MaxSummaryLabels bounds the labels sent per frame: a detection message is
// sent without retransmission, and one lost fragment loses a whole message,
// so messages stay a few kilobytes however crowded the frame.
const MaxSummaryLabels = 64

// Summarize makes the Summary of a frame's detections.
func Summarize(dets []detection.Detection) Summary {
	s := Summary{Count: len(dets), Labels: make([]LabelScore, 0, min(len(dets), MaxSummaryLabels))}
	for i := 0; i < len(dets) && i < MaxSummaryLabels; i++ {
		d := &dets[i]
		s.Labels = append(s.Labels, LabelScore{Label: d.Class, Score: d.Score, TrackID: d.TrackID,
			StageScores: d.StageScores, Propagated: d.Propagated})
	}
	return s
}

// HubConfig configures a Hub and its WHEP endpoint. Every zero field takes
// the default its comment gives; the zero value serves browsers on this
// machine.
type HubConfig struct {
	// Addr is where ListenAndServe listens; default "127.0.0.1:8889".
	// ListenAndServe has no credentials, so it serves this machine only
	// (":8889" is loopback too); NewServer serves beyond it.
	Addr string
	// WebRTC configures ICE: STUN/TURN servers, the UDP port range, 1:1
	// NAT addresses; the zero value works on loopback and a LAN.
	WebRTC WebRTCConfig
	// Encoder configures the encoders of streams that Publish creates;
	// default H.264 with EncoderConfig's defaults. AddStream chooses per
	// stream (e.g. VP8).
	Encoder encode.EncoderConfig
	// ViewerQueue is how many frames may wait for one viewer; a frame that
	// finds the queue full is dropped for that viewer alone. Default 8
	// (about a quarter second at 30 fps).
	ViewerQueue int
	// MaxViewers bounds the WHEP sessions of the hub, connecting or not;
	// default 100.
	MaxViewers int
	// MaxOfferBytes bounds the body of a WHEP offer; default 64 KiB.
	MaxOfferBytes int64
	// GatherTimeout bounds the wait for ICE gathering before answering
	// (STUN/TURN servers can be slow); the answer then carries the
	// candidates found so far. Default 5 s.
	GatherTimeout time.Duration
	// ConnectTimeout closes a session that has not connected this long
	// after its answer; default 30 s.
	ConnectTimeout time.Duration
	// DisconnectTimeout closes a session this long after its connection is
	// lost (no traffic for WebRTC.ICEDisconnectedTimeout) unless it
	// recovers; default 5 s.
	DisconnectTimeout time.Duration
	// KeyframeInterval is the shortest time between the keyframes forced
	// for viewers' picture loss reports (PLI, FIR) and for viewers that
	// dropped frames; a joining viewer gets one at once regardless.
	// Default 500 ms.
	KeyframeInterval time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c HubConfig) withDefaults() (HubConfig, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8889"
	}
	enc, err := c.Encoder.WithDefaults()
	if err != nil {
		return c, fmt.Errorf("hub: %w", err)
	}
	c.Encoder = enc
	def := func(d *time.Duration, v time.Duration, name string) {
		if *d == 0 {
			*d = v
		}
		if *d < 0 && err == nil {
			err = fmt.Errorf("hub: negative %s %v", name, *d)
		}
	}
	def(&c.GatherTimeout, 5*time.Second, "gather timeout")
	def(&c.ConnectTimeout, 30*time.Second, "connect timeout")
	def(&c.DisconnectTimeout, 5*time.Second, "disconnect timeout")
	def(&c.KeyframeInterval, 500*time.Millisecond, "keyframe interval")
	if err != nil {
		return c, err
	}
	if c.ViewerQueue == 0 {
		c.ViewerQueue = 8
	}
	if c.MaxViewers == 0 {
		c.MaxViewers = 100
	}
	if c.MaxOfferBytes == 0 {
		c.MaxOfferBytes = 64 << 10
	}
	if c.ViewerQueue < 0 || c.MaxViewers < 0 || c.MaxOfferBytes < 0 {
		return c, fmt.Errorf("hub: negative viewer queue %d, max viewers %d or max offer size %d", c.ViewerQueue, c.MaxViewers, c.MaxOfferBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Hub holds named live streams and the browsers watching them. The
// pipeline publishes annotated frames with Publish; the hub encodes each
// stream once, only while someone watches, and fans the encoded frames out
// to every viewer (a WHEP session) through the viewer's own bounded queue,
// so a slow or vanished viewer loses frames of its own and never slows
// Publish or the other viewers. Each frame's detection Summary goes to
// every viewer over its "detections" data channel.
//
// The Hub is an http.Handler: the viewer page at /, GET /streams and the
// WHEP endpoint at /whep/{stream} (see ServeHTTP). All methods are safe for
// concurrent use.
type Hub struct {
	cfg HubConfig
	api *webrtc.API
	log *slog.Logger
	mux *http.ServeMux

	mu       sync.Mutex
	streams  map[string]*hubStream
	sessions map[string]*session
	closed   bool
}

// NewHub checks cfg and builds a hub with no streams.
func NewHub(cfg HubConfig) (*Hub, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	api, err := NewAPI(cfg.WebRTC)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	h := &Hub{
		cfg: cfg, api: api, log: cfg.Logger,
		streams:  map[string]*hubStream{},
		sessions: map[string]*session{},
	}
	h.mux = h.routes()
	return h, nil
}

// ErrStreamExists is returned by AddStream for a name already in use.
var ErrStreamExists = errors.New("stream: stream exists")

// ErrClosed is returned (wrapped) by every use of a hub or server after its
// Close.
var ErrClosed = errors.New("stream: closed")

// streamIDPattern keeps stream names safe in URL paths and logs.
var streamIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkStreamID(id string) error {
	if !streamIDPattern.MatchString(id) {
		return fmt.Errorf("stream name %q is not 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit", id)
	}
	return nil
}

// AddStream declares a stream with its own encoder settings (its codec,
// e.g. VP8), so viewers can connect before its first frame. Publish to a
// name not yet declared creates the stream with the hub's Encoder.
func (h *Hub) AddStream(id string, enc encode.EncoderConfig) error {
	if err := checkStreamID(id); err != nil {
		return err
	}
	enc, err := enc.WithDefaults()
	if err != nil {
		return fmt.Errorf("stream %s: %w", id, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return fmt.Errorf("add stream %s: %w", id, ErrClosed)
	}
	if _, ok := h.streams[id]; ok {
		return fmt.Errorf("add stream %s: %w", id, ErrStreamExists)
	}
	h.streams[id] = newHubStream(h, id, enc)
	return nil
}

// RemoveStream ends a stream and the sessions watching it. Removing a
// stream that does not exist does nothing.
func (h *Hub) RemoveStream(id string) {
	h.mu.Lock()
	s := h.streams[id]
	delete(h.streams, id)
	var gone []*session
	for _, ss := range h.sessions {
		if ss.stream == s {
			gone = append(gone, ss)
		}
	}
	h.mu.Unlock()
	if s == nil {
		return
	}
	for _, ss := range gone {
		ss.close("stream removed")
	}
	s.shut()
}

// Close ends every session and stream. Publish and new sessions fail with
// ErrClosed after it. It is idempotent.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	streams := h.streams
	h.streams = map[string]*hubStream{}
	var gone []*session
	for _, ss := range h.sessions {
		gone = append(gone, ss)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range gone {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss.close("hub closed")
		}()
	}
	wg.Wait()
	for _, s := range streams {
		s.shut()
	}
	return nil
}

func (h *Hub) stream(id string) *hubStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.streams[id]
}

// Publish hands the hub one annotated frame of a stream: w x h packed RGB24
// (len(rgb) = w*h*3) presented at pts, with its detections. Publish does
// not retain rgb. While the stream has viewers the frame is encoded here,
// in the caller's goroutine, and queued for every viewer without waiting
// for any; without viewers it only counts the frame. pts should increase;
// a stream whose clock restarts (a reconnected camera) is moved on so
// viewers see time go forward. A stream not yet known is created with the
// hub's Encoder.
func (h *Hub) Publish(id string, w, ht int, rgb []byte, pts time.Duration, sum Summary) error {
	_, err := h.PublishWatched(id, w, ht, rgb, pts, sum)
	return err
}

// PublishWatched is Publish that also says whether the frame was encoded
// and queued for at least one viewer (false: nobody watches, every
// viewer's queue was full, or the stream is being removed): when it
// returns true, the frame's encoded picture has been handed to the
// viewers' track writers.
func (h *Hub) PublishWatched(id string, w, ht int, rgb []byte, pts time.Duration, sum Summary) (bool, error) {
	ready := time.Now()
	if err := encode.CheckRGB(w, ht, rgb, pts); err != nil {
		return false, fmt.Errorf("publish %s: %w", id, err)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false, fmt.Errorf("publish %s: %w", id, ErrClosed)
	}
	s := h.streams[id]
	if s == nil {
		if err := checkStreamID(id); err != nil {
			h.mu.Unlock()
			return false, fmt.Errorf("publish: %w", err)
		}
		s = newHubStream(h, id, h.cfg.Encoder)
		h.streams[id] = s
	}
	h.mu.Unlock()
	return s.publish(ready, w, ht, rgb, pts, sum)
}

// StreamStats is what GET /streams reports for a stream.
type StreamStats struct {
	ID    string       `json:"id"`
	Codec encode.Codec `json:"codec"`
	// Width and Height are the last published frame's size, 0 before one.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Viewers are the sessions connected and receiving frames; Sessions
	// also counts those still connecting.
	Viewers  int `json:"viewers"`
	Sessions int `json:"sessions"`
	// FPS is the publish rate over the last two seconds.
	FPS float64 `json:"fps"`
	// Frames counts published frames, Encoded those encoded (published
	// while someone watched), Keyframes the keyframes among them.
	Frames    int64 `json:"frames"`
	Encoded   int64 `json:"encoded"`
	Keyframes int64 `json:"keyframes"`
	// KeyRequests counts viewers' picture loss reports (PLI, FIR).
	KeyRequests int64 `json:"key_requests"`
	// Dropped counts frames that viewers did not get, summed over all
	// viewers past and present: their queue was full, or they were waiting
	// for a keyframe after such a drop.
	Dropped int64 `json:"dropped"`
}

// Streams reports every stream, sorted by name.
func (h *Hub) Streams() []StreamStats {
	h.mu.Lock()
	streams := make([]*hubStream, 0, len(h.streams))
	for _, s := range h.streams {
		streams = append(streams, s)
	}
	sessions := map[*hubStream]int{}
	for _, ss := range h.sessions {
		sessions[ss.stream]++
	}
	h.mu.Unlock()
	out := make([]StreamStats, 0, len(streams))
	for _, s := range streams {
		st := s.stats()
		st.Sessions = sessions[s]
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Sessions counts the WHEP sessions open, connecting or connected.
func (h *Hub) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// ListenAndServe serves the hub on cfg.Addr until ctx is done, then stops
// the HTTP server (the sessions stay until Close). It is a Server with the
// hub alone and no credentials: loopback only.
func (h *Hub) ListenAndServe(ctx context.Context) error {
	l, err := net.Listen("tcp", h.cfg.Addr)
	if err != nil {
		return fmt.Errorf("hub: listen: %w", err)
	}
	return h.Serve(ctx, l)
}

// Serve is ListenAndServe on a listener the caller made; it closes l. A
// listener beyond loopback is refused (ErrNeedsAuth).
func (h *Hub) Serve(ctx context.Context, l net.Listener) error {
	srv, err := NewServer(ServerConfig{Addr: l.Addr().String(), Logger: h.log}, Routes{Hub: h})
	if err != nil {
		l.Close()
		return fmt.Errorf("hub: %w", err)
	}
	srv.mu.Lock()
	srv.startOn(l)
	done := srv.done
	srv.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-done:
	}
	return srv.Close()
}

// frameOut is one published frame as every viewer gets it; it is shared
// and never changed after Publish queues it.
type frameOut struct {
	seq   int64
	ready time.Time       // when Publish was called: "annotated frame ready"
	pts   time.Duration   // on the stream's timeline
	video []encode.Packet // what the encoder made of it, maybe nothing
	sum   Summary
}

// item is a frame in one viewer's queue.
type item struct {
	f *frameOut
	// gap says frames before this one were dropped for this viewer, so
	// its decoder must wait for a keyframe.
	gap bool
}

// hubStream is one named stream.
type hubStream struct {
	id  string
	hub *Hub
	enc encode.EncoderConfig

	// pub serialises publishing and guards the fields below it.
	pub      sync.Mutex
	encoder  *encode.Encoder
	shifted  time.Duration // added to pts since the stream's clock restarted
	lastPTS  time.Duration
	hasPTS   bool
	lastKey  time.Time // when a keyframe was last forced
	lastLog  time.Time // when drops were last logged
	logDrops int64     // drops since then
	shutDown bool

	// vmu guards changes of viewers; Publish reads it without a lock.
	vmu     sync.Mutex
	viewers atomic.Pointer[[]*session]

	// joinKey asks for a keyframe now (a viewer joined), wantKey for one
	// within KeyframeInterval (picture loss, drops).
	joinKey, wantKey atomic.Bool

	frames, encoded, keyframes, keyRequests atomic.Int64
	// droppedGone keeps the drops of viewers that left.
	droppedGone atomic.Int64

	// latest is the last frame, for snapshots (LatestJPEG).
	latest latestFrame

	smu   sync.Mutex
	times [64]time.Time // publish times, a ring
	nt    int
	size  [2]int
}

func newHubStream(h *Hub, id string, enc encode.EncoderConfig) *hubStream {
	s := &hubStream{id: id, hub: h, enc: enc}
	s.viewers.Store(&[]*session{})
	return s
}

func (s *hubStream) publish(ready time.Time, w, h int, rgb []byte, pts time.Duration, sum Summary) (bool, error) {
	s.pub.Lock()
	defer s.pub.Unlock()
	if s.shutDown {
		// Removed while this frame was on its way; a later Publish makes
		// a new stream.
		return false, nil
	}
	seq := s.frames.Add(1) - 1
	s.smu.Lock()
	s.times[s.nt%len(s.times)] = ready
	s.nt++
	s.size = [2]int{w, h}
	s.smu.Unlock()
	s.latest.keep(seq, w, h, rgb)

	pts += s.shifted
	if s.hasPTS && pts <= s.lastPTS {
		step := time.Duration(float64(time.Second) / s.enc.FrameRate)
		s.shifted += s.lastPTS + step - pts
		pts = s.lastPTS + step
	}
	s.lastPTS, s.hasPTS = pts, true

	viewers := *s.viewers.Load()
	if len(viewers) == 0 {
		// Nobody watches: no encoding at all. The next viewer starts a new
		// encoder, whose first frame is a keyframe.
		s.closeEncoder()
		return false, nil
	}
	// An encoder still here has encoded a frame (a failed one is closed), so
	// its size is the stream's so far.
	if e := s.encoder; e != nil {
		if ew, eh := e.InputSize(); w != ew || h != eh {
			s.hub.log.Info("webrtc stream changed size; restarting its encoder", "stream", s.id, "from", fmt.Sprintf("%dx%d", ew, eh), "to", fmt.Sprintf("%dx%d", w, h))
			s.closeEncoder()
		}
	}
	if s.encoder == nil {
		e, err := encode.NewEncoder(s.enc)
		if err != nil {
			return false, fmt.Errorf("publish %s: %w", s.id, err)
		}
		s.encoder = e
		s.joinKey.Store(false)
		s.wantKey.Store(false)
	} else {
		force := s.joinKey.Swap(false)
		if !force && s.wantKey.Load() && ready.Sub(s.lastKey) >= s.hub.cfg.KeyframeInterval {
			force = true
		}
		if force {
			s.wantKey.Store(false)
			s.lastKey = ready
			s.encoder.ForceKeyframe()
		}
	}
	pkts, err := s.encoder.Encode(w, h, rgb, pts)
	if err != nil {
		// A fresh encoder on the next frame is the best chance to recover.
		s.closeEncoder()
		return false, fmt.Errorf("publish %s: %w", s.id, err)
	}
	s.encoded.Add(1)
	for _, p := range pkts {
		if p.Keyframe {
			s.keyframes.Add(1)
			// Any keyframe answers the requests so far.
			s.wantKey.Store(false)
		}
	}
	// A copy the caller cannot change, never nil (JSON [] rather than null).
	sum.Labels = append([]LabelScore{}, sum.Labels[:min(len(sum.Labels), MaxSummaryLabels)]...)
	f := &frameOut{seq: seq, ready: ready, pts: pts, video: pkts, sum: sum}
	dropped := 0
	for _, v := range viewers {
		select {
		case v.queue <- item{f: f, gap: v.pendingGap}:
			v.pendingGap = false
		default:
			v.pendingGap = true
			v.dropped.Add(1)
			dropped++
		}
	}
	if dropped > 0 {
		// The viewers that dropped resume at the next keyframe; ask for one
		// soon rather than at the end of the GOP.
		s.wantKey.Store(true)
		s.logDrops += int64(dropped)
		if ready.Sub(s.lastLog) >= 5*time.Second {
			s.hub.log.Warn("webrtc viewers too slow; frames dropped for them", "stream", s.id, "dropped", s.logDrops)
			s.lastLog, s.logDrops = ready, 0
		}
	}
	return dropped < len(viewers), nil
}

func (s *hubStream) closeEncoder() {
	if s.encoder != nil {
		s.encoder.Close()
		s.encoder = nil
	}
}

// shut releases the encoder of a removed stream; a Publish still holding
// the stream then does nothing.
func (s *hubStream) shut() {
	s.pub.Lock()
	defer s.pub.Unlock()
	s.shutDown = true
	s.closeEncoder()
}

// requestKey asks for a keyframe: at once for a viewer that joined, within
// KeyframeInterval otherwise.
func (s *hubStream) requestKey(join bool) {
	if join {
		s.joinKey.Store(true)
		return
	}
	s.wantKey.Store(true)
}

func (s *hubStream) addViewer(v *session) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	old := *s.viewers.Load()
	if slices.Contains(old, v) {
		return
	}
	next := append(slices.Clone(old), v)
	s.viewers.Store(&next)
	s.requestKey(true)
}

// retire takes v out of the fan-out. A Publish in flight may still queue a
// frame for it from the list it already read; nobody reads it.
func (s *hubStream) retire(v *session) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	old := *s.viewers.Load()
	next := slices.DeleteFunc(slices.Clone(old), func(x *session) bool { return x == v })
	s.viewers.Store(&next)
}

func (s *hubStream) stats() StreamStats {
	st := StreamStats{
		ID: s.id, Codec: s.enc.Codec,
		Frames: s.frames.Load(), Encoded: s.encoded.Load(),
		Keyframes: s.keyframes.Load(), KeyRequests: s.keyRequests.Load(),
	}
	s.vmu.Lock()
	viewers := *s.viewers.Load()
	st.Viewers = len(viewers)
	st.Dropped = s.droppedGone.Load()
	for _, v := range viewers {
		st.Dropped += v.dropped.Load()
	}
	s.vmu.Unlock()

	s.smu.Lock()
	defer s.smu.Unlock()
	st.Width, st.Height = s.size[0], s.size[1]
	now := time.Now()
	n := min(s.nt, len(s.times))
	var first, last time.Time
	k := 0
	for i := 0; i < n; i++ {
		t := s.times[(s.nt-1-i)%len(s.times)]
		if now.Sub(t) > 2*time.Second {
			break
		}
		if k == 0 {
			last = t
		}
		first = t
		k++
	}
	if k >= 2 && last.After(first) {
		st.FPS = float64(k-1) / last.Sub(first).Seconds()
	}
	return st
}
