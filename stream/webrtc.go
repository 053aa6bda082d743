package stream

import (
	"fmt"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v3"
)

// Codec names a video codec htcstream can publish.
type Codec string

const (
	// H264 is sent as constrained baseline, the profile every browser decodes.
	H264 Codec = "h264"
	VP8  Codec = "vp8"
)

// WebRTCConfig configures the WebRTC side. The zero value works on loopback.
type WebRTCConfig struct {
	// ICEServers are STUN/TURN URLs handed to every peer connection;
	// default none (host candidates only).
	ICEServers []string
	// UDPPortMin and UDPPortMax bound the local UDP ports ICE uses, for
	// firewalls; default 0, 0 = any port.
	UDPPortMin, UDPPortMax uint16
}

// NewAPI builds a pion API that offers exactly the codecs htcstream encodes,
// with pion's default interceptors (NACK, RTCP reports) so receivers can ask
// for retransmissions and keyframes.
func NewAPI(cfg WebRTCConfig) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: codecCapability(H264), PayloadType: 102},
		{RTPCodecCapability: codecCapability(VP8), PayloadType: 96},
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

func codecCapability(c Codec) webrtc.RTPCodecCapability {
	fb := []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	switch c {
	case VP8:
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
func NewVideoTrack(c Codec, streamID string) (*webrtc.TrackLocalStaticSample, error) {
	if c != H264 && c != VP8 {
		return nil, fmt.Errorf("unknown codec %q (want h264 or vp8)", c)
	}
	return webrtc.NewTrackLocalStaticSample(codecCapability(c), "video", streamID)
}
