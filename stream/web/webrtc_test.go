package web

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media"

	"github.com/htcstream/htcstream/stream/encode"
)

// TestOfferAnswerAndMedia builds two real peer connections on loopback: one
// publishes an H.264 track, the other answers, ICE and DTLS connect, and RTP
// carrying the written samples reaches the receiver.
func TestOfferAnswerAndMedia(t *testing.T) {
	api, err := NewAPI(WebRTCConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := api.NewPeerConnection(PeerConfiguration(WebRTCConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	track, err := NewVideoTrack(encode.H264, "cam0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	sub.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if _, _, err := tr.ReadRTP(); err == nil {
			got <- tr.Codec().MimeType
		}
	})

	offer, err := pub.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(offer.SDP, "m=video") || !strings.Contains(offer.SDP, "H264/90000") {
		t.Fatalf("offer lacks an H.264 video section:\n%s", offer.SDP)
	}
	gathered := webrtc.GatheringCompletePromise(pub)
	if err := pub.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := sub.SetRemoteDescription(*pub.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := sub.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(sub)
	if err := sub.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := pub.SetRemoteDescription(*sub.LocalDescription()); err != nil {
		t.Fatal(err)
	}

	// A tiny H.264 access unit (SPS, PPS, IDR slice headers); pion only
	// packetises it, so its content need not decode.
	au := []byte{0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00}
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case mime := <-got:
			if mime != webrtc.MimeTypeH264 {
				t.Fatalf("received %s, want H.264", mime)
			}
			return
		case <-tick.C:
			if err := track.WriteSample(media.Sample{Data: au, Duration: 20 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatalf("no RTP reached the receiver (ICE state %s)", pub.ICEConnectionState())
		}
	}
}

func TestUnknownCodecAndBadPortRange(t *testing.T) {
	if _, err := NewVideoTrack("av2", "x"); err == nil {
		t.Fatal("unknown codec must be an error")
	}
	if _, err := NewAPI(WebRTCConfig{UDPPortMin: 5000, UDPPortMax: 4000}); err == nil {
		t.Fatal("an inverted port range must be an error")
	}
}
