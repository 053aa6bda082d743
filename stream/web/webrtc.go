package web

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v3"

	"github.com/htcstream/htcstream/stream/encode"
)

// WebRTCConfig configures the WebRTC side. The zero value works on loopback
// and on a LAN.
type WebRTCConfig struct {
	// ICEServers are STUN/TURN URLs handed to every peer connection;
	// default none (host candidates only).
	ICEServers []string
	// UDPPortMin and UDPPortMax bound the local UDP ports ICE uses, for
	// firewalls; default 0, 0 = any port.
	UDPPortMin, UDPPortMax uint16
	// NAT1To1IPs are the public IPs of a 1:1 NAT in front of this host
	// (a cloud VM's public address), advertised as host candidates in
	// place of the local ones; default none.
	NAT1To1IPs []string
	// ICEDisconnectedTimeout is how long a connection may go without any
	// traffic before it counts as disconnected; default 5 s.
	ICEDisconnectedTimeout time.Duration
}

// NewAPI builds a pion API that offers exactly the codecs htcstream encodes,
// with pion's default interceptors (NACK, RTCP reports) so receivers can ask
// for retransmissions and keyframes.
func NewAPI(cfg WebRTCConfig) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: codecCapability(encode.H264), PayloadType: 102},
		{RTPCodecCapability: codecCapability(encode.VP8), PayloadType: 96},
	} {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("register %s: %w", c.MimeType, err)
		}
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, fmt.Errorf("webrtc interceptors: %w", err)
	}
	var se webrtc.SettingEngine
	// Loopback candidates are what a browser on the same machine reaches
	// (pion leaves them out by default).
	se.SetIncludeLoopbackCandidate(true)
	// The server answers; browsers that hide their addresses behind mDNS
	// names still reach it, and it learns their addresses from their
	// checks. Resolving those names would only add multicast traffic.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if len(cfg.NAT1To1IPs) > 0 {
		for _, ip := range cfg.NAT1To1IPs {
			if net.ParseIP(ip) == nil {
				return nil, fmt.Errorf("NAT 1:1 IP %q is not an IP address", ip)
			}
		}
		se.SetNAT1To1IPs(cfg.NAT1To1IPs, webrtc.ICECandidateTypeHost)
	}
	disc := cfg.ICEDisconnectedTimeout
	if disc < 0 {
		return nil, fmt.Errorf("negative ICE disconnected timeout %v", disc)
	}
	if disc == 0 {
		disc = 5 * time.Second
	}
	// pion's own failed timeout (25 s) and a keepalive well inside the
	// disconnected timeout, so a live but idle peer never looks gone.
	se.SetICETimeouts(disc, 25*time.Second, min(2*time.Second, disc/2))
	if cfg.UDPPortMin != 0 || cfg.UDPPortMax != 0 {
		if err := se.SetEphemeralUDPPortRange(cfg.UDPPortMin, cfg.UDPPortMax); err != nil {
			return nil, fmt.Errorf("udp port range %d-%d: %w", cfg.UDPPortMin, cfg.UDPPortMax, err)
		}
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// PeerConfiguration is the peer connection configuration for cfg.
func PeerConfiguration(cfg WebRTCConfig) webrtc.Configuration {
	var pc webrtc.Configuration
	if len(cfg.ICEServers) > 0 {
		pc.ICEServers = []webrtc.ICEServer{{URLs: cfg.ICEServers}}
	}
	return pc
}

func codecCapability(c encode.Codec) webrtc.RTPCodecCapability {
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	switch c {
	case encode.VP8:
		return webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}
	default:
		return webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
		}
	}
}

// NewVideoTrack makes a track that takes whole encoded frames (samples) of
// codec c; pion packetises them for every peer it is added to.
func NewVideoTrack(c encode.Codec, streamID string) (*webrtc.TrackLocalStaticSample, error) {
	if c != encode.H264 && c != encode.VP8 {
		return nil, fmt.Errorf("unknown codec %q (want h264 or vp8)", c)
	}
	return webrtc.NewTrackLocalStaticSample(codecCapability(c), "video", streamID)
}
