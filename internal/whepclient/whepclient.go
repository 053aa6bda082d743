// Package whepclient is a WHEP viewer made of a real pion peer connection,
// as a program (not a browser) watches an htcstream stream: for tests of
// the hub itself and of whole runs that serve their preview.
package whepclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"
)

// client has no keep-alive connections, whose server goroutines would blur
// the goroutine counts of leak tests.
var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}

// Options configure Dial.
type Options struct {
	// API builds the peer connection; required. The server's own API
	// (web.NewAPI) fits: it includes loopback candidates, which pion
	// leaves out by default.
	API *webrtc.API
	// Header is sent with the offer and the DELETE (e.g. Authorization).
	Header http.Header
	// OnRTP, when set, sees every RTP packet of the video track, on the
	// track's reader goroutine.
	OnRTP func(*rtp.Packet)
	// Messages bounds the queue of data channel messages; default 1000.
	// A message that finds it full is dropped.
	Messages int
}

// Viewer is one WHEP session. Close its PC when done (Delete first to
// end the session politely).
type Viewer struct {
	PC *webrtc.PeerConnection
	// Session is the session's absolute URL; Answer the server's SDP.
	Session, Answer string
	// Connected closes when the peer connection connects, Hello when the
	// server's hello arrives on the "detections" data channel.
	Connected, Hello chan struct{}
	// Messages gets the raw JSON of every "detections" message.
	Messages chan []byte
	// Track gets the remote video track once; TrackDone closes when its
	// reader ends (the connection closed).
	Track     chan *webrtc.TrackRemote
	TrackDone chan struct{}

	hdr http.Header
}

// Dial offers to watch base/whep/stream and applies the answer; it
// returns once the answer is set, before the connection is up (wait on
// Connected).
func Dial(base, stream string, opt Options) (*Viewer, error) {
	if opt.API == nil {
		return nil, errors.New("whepclient: no API")
	}
	if opt.Messages <= 0 {
		opt.Messages = 1000
	}
	pc, err := opt.API.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	v := &Viewer{
		PC: pc, Connected: make(chan struct{}), Hello: make(chan struct{}),
		Messages: make(chan []byte, opt.Messages), Track: make(chan *webrtc.TrackRemote, 1),
		TrackDone: make(chan struct{}), hdr: opt.Header,
	}
	fail := func(err error) (*Viewer, error) {
		pc.Close()
		return nil, err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return fail(err)
	}
	// as the viewer page opens it: in order, never retransmitted
	ordered, zero := true, uint16(0)
	dc, err := pc.CreateDataChannel("detections", &webrtc.DataChannelInit{Ordered: &ordered, MaxRetransmits: &zero})
	if err != nil {
		return fail(err)
	}
	var helloOnce, connOnce sync.Once
	dc.OnMessage(func(m webrtc.DataChannelMessage) {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(m.Data, &head) != nil {
			return
		}
		switch head.Type {
		case "hello":
			helloOnce.Do(func() { close(v.Hello) })
		case "detections":
			select {
			case v.Messages <- m.Data:
			default:
			}
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			connOnce.Do(func() { close(v.Connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		defer close(v.TrackDone)
		v.Track <- tr
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if opt.OnRTP != nil {
				opt.OnRTP(p)
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	<-gathered
	req, err := http.NewRequest(http.MethodPost, base+"/whep/"+stream, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return fail(err)
	}
	for k, vs := range opt.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/sdp")
	res, err := client.Do(req)
	if err != nil {
		return fail(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fail(fmt.Errorf("POST offer: %s: %s", res.Status, body))
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/sdp" {
		return fail(fmt.Errorf("answer has Content-Type %q", ct))
	}
	loc := res.Header.Get("Location")
	if !strings.HasPrefix(loc, "/whep/"+stream+"/") {
		return fail(fmt.Errorf("Location %q is not under /whep/%s/", loc, stream))
	}
	v.Session, v.Answer = base+loc, string(body)
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: v.Answer}); err != nil {
		return fail(err)
	}
	return v, nil
}

// Delete ends the session (DELETE on its URL) and returns the status.
func (v *Viewer) Delete() (int, error) {
	req, err := http.NewRequest(http.MethodDelete, v.Session, nil)
	if err != nil {
		return 0, err
	}
	for k, vs := range v.hdr {
		req.Header[k] = vs
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	res.Body.Close()
	return res.StatusCode, nil
}
