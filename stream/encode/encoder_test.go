package encode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mediatest"
)

// nalUnits splits an Annex B access unit at its start codes.
func nalUnits(au []byte) [][]byte {
	var nals [][]byte
	start := -1
	for i := 0; i+3 <= len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 {
			if start >= 0 {
				nals = append(nals, bytes.TrimRight(au[start:i], "\x00"))
			}
			start = i + 3
			i += 2
		}
	}
	if start >= 0 && start < len(au) {
		nals = append(nals, au[start:])
	}
	return nals
}

func nalTypes(au []byte) []int {
	var ts []int
	for _, n := range nalUnits(au) {
		if len(n) > 0 {
			ts = append(ts, int(n[0]&0x1f))
		}
	}
	return ts
}

const (
	nalIDR = 5
	nalSPS = 7
	nalPPS = 8
)

func isIDRWithHeaders(au []byte) bool {
	ts := nalTypes(au)
	return slices.Contains(ts, nalSPS) && slices.Contains(ts, nalPPS) && slices.Contains(ts, nalIDR)
}

func TestH264ForWebRTC(t *testing.T) {
	enc, err := NewEncoder(EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	const w, h, n, forced = 96, 64, 12, 7
	var stream []byte
	for i := 0; i < n; i++ {
		if i == forced {
			enc.ForceKeyframe()
		}
		pts := time.Duration(i) * 33 * time.Millisecond
		pkts, err := enc.Encode(w, h, mediatest.Pattern(w, h, i), pts)
		if err != nil {
			t.Fatal(err)
		}
		// Zero latency: WebRTC sends each frame as soon as it is captured.
		if len(pkts) != 1 {
			t.Fatalf("frame %d gave %d packets, want 1", i, len(pkts))
		}
		p := pkts[0]
		if p.PTS != pts || p.DTS != pts {
			t.Errorf("frame %d: pts %v dts %v, want %v", i, p.PTS, p.DTS, pts)
		}
		if !bytes.HasPrefix(p.Data, []byte{0, 0, 0, 1}) && !bytes.HasPrefix(p.Data, []byte{0, 0, 1}) {
			t.Fatalf("frame %d: packet is not Annex B: % x", i, p.Data[:min(8, len(p.Data))])
		}
		wantKey := i == 0 || i == forced
		if p.Keyframe != wantKey || isIDRWithHeaders(p.Data) != wantKey || slices.Contains(nalTypes(p.Data), nalIDR) != wantKey {
			t.Errorf("frame %d: keyframe flag %v, NAL types %v; want keyframe %v (IDR with SPS and PPS)", i, p.Keyframe, nalTypes(p.Data), wantKey)
		}
		if i == 0 {
			for _, nal := range nalUnits(p.Data) {
				if nal[0]&0x1f == nalSPS {
					// profile_idc 66 with constraint_set1: constrained baseline.
					if nal[1] != 66 || nal[2]&0x40 == 0 {
						t.Errorf("SPS profile_idc %d constraints %#x, want 66 with constraint_set1", nal[1], nal[2])
					}
				}
			}
		}
		stream = append(stream, p.Data...)
	}
	rest, err := enc.Flush()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rest {
		stream = append(stream, p.Data...)
	}
	path := filepath.Join(t.TempDir(), "live.h264")
	if err := os.WriteFile(path, stream, 0o644); err != nil {
		t.Fatal(err)
	}
	info := mediatest.Probe(t, path)
	s := info.Streams[0]
	if s.CodecName != "h264" || s.Profile != "Constrained Baseline" || s.Width != w || s.Height != h || info.Frames(t) != n {
		t.Fatalf("ffprobe: %s %s %dx%d, %d frames; want h264 Constrained Baseline %dx%d, %d frames",
			s.CodecName, s.Profile, s.Width, s.Height, info.Frames(t), w, h, n)
	}
	enc.Close()
	enc.Close()
	if _, err := enc.Encode(w, h, mediatest.Pattern(w, h, 0), time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("encode after close: %v, want ErrClosed", err)
	}
}

// writeIVF stores VP8 frames in the IVF container that ffprobe reads.
func writeIVF(t *testing.T, path string, w, h int, pkts []Packet) {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("DKIF")
	b.Write(le.AppendUint16(nil, 0))
	b.Write(le.AppendUint16(nil, 32))
	b.WriteString("VP80")
	b.Write(le.AppendUint16(nil, uint16(w)))
	b.Write(le.AppendUint16(nil, uint16(h)))
	b.Write(le.AppendUint32(nil, TickRate))
	b.Write(le.AppendUint32(nil, 1))
	b.Write(le.AppendUint32(nil, uint32(len(pkts))))
	b.Write(le.AppendUint32(nil, 0))
	for _, p := range pkts {
		b.Write(le.AppendUint32(nil, uint32(len(p.Data))))
		b.Write(le.AppendUint64(nil, uint64(ToTicks(p.PTS))))
		b.Write(p.Data)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestVP8KeyframesOnRequest(t *testing.T) {
	enc, err := NewEncoder(EncoderConfig{Codec: VP8})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	// VP8 codes odd sizes as they are: no padding.
	const w, h, n, forced = 33, 17, 10, 6
	var all []Packet
	for i := 0; i < n; i++ {
		if i == forced {
			enc.ForceKeyframe()
		}
		pkts, err := enc.Encode(w, h, mediatest.Pattern(w, h, i), time.Duration(i)*40*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(pkts) != 1 {
			t.Fatalf("frame %d gave %d packets, want 1", i, len(pkts))
		}
		p := pkts[0]
		wantKey := i == 0 || i == forced
		// The frame tag's lowest bit is 0 on a VP8 key frame (RFC 6386 9.1).
		if p.Keyframe != wantKey || (p.Data[0]&1 == 0) != wantKey {
			t.Errorf("frame %d: keyframe flag %v, tag bit %d; want keyframe %v", i, p.Keyframe, p.Data[0]&1, wantKey)
		}
		all = append(all, p)
	}
	if ew, eh := enc.Size(); ew != w || eh != h {
		t.Errorf("VP8 coded size %dx%d, want %dx%d", ew, eh, w, h)
	}
	path := filepath.Join(t.TempDir(), "live.ivf")
	writeIVF(t, path, w, h, all)
	info := mediatest.Probe(t, path)
	if s := info.Streams[0]; s.CodecName != "vp8" || s.Width != w || s.Height != h || info.Frames(t) != n {
		t.Fatalf("ffprobe: %s %dx%d, %d frames; want vp8 %dx%d, %d frames", s.CodecName, s.Width, s.Height, info.Frames(t), w, h, n)
	}
}

func TestEncoderBadInput(t *testing.T) {
	for _, cfg := range []EncoderConfig{
		{Codec: "av2"}, {CRF: 52}, {Codec: VP8, CRF: 2}, {Preset: "warp"},
		{FrameRate: -1}, {GOP: -time.Second}, {Bitrate: -5}, {Threads: -1},
	} {
		if _, err := NewEncoder(cfg); err == nil {
			t.Errorf("config %+v: no error", cfg)
		}
	}

	enc, err := NewEncoder(EncoderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for _, c := range []struct {
		w, h int
		rgb  []byte
		want string
	}{
		{0, 10, nil, "out of range"},
		{-4, 10, nil, "out of range"},
		{100000, 2, nil, "out of range"},
		{4, 4, make([]byte, 47), "has 47 bytes, want 48"},
	} {
		if _, err := enc.Encode(c.w, c.h, c.rgb, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Encode(%d, %d, %d bytes): %v, want an error with %q", c.w, c.h, len(c.rgb), err, c.want)
		}
	}
	if _, err := enc.Encode(16, 16, mediatest.Pattern(16, 16, 0), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Encode(32, 16, mediatest.Pattern(32, 16, 1), 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "size change") {
		t.Errorf("size change: %v", err)
	}
	// A repeated timestamp is moved one tick on, not lost.
	pkts, err := enc.Encode(16, 16, mediatest.Pattern(16, 16, 1), 10*time.Millisecond)
	if err != nil || len(pkts) != 1 || pkts[0].PTS != FromTicks(ToTicks(10*time.Millisecond)+1) || enc.Nudged() != 1 {
		t.Errorf("repeated pts: %v, %d packets, nudged %d", err, len(pkts), enc.Nudged())
	}
	if _, err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Encode(16, 16, mediatest.Pattern(16, 16, 2), time.Second); err == nil || !strings.Contains(err.Error(), "flushed") {
		t.Errorf("encode after flush: %v", err)
	}
}

// TestBitrateModes opens both codecs in bitrate mode, whose options
// (maxrate, bufsize, CBR for VP8) the codecs must accept.
func TestBitrateModes(t *testing.T) {
	for _, c := range []Codec{H264, VP8} {
		enc, err := NewEncoder(EncoderConfig{Codec: c, Bitrate: 300_000, GOP: time.Second, FrameRate: 25})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if pkts, err := enc.Encode(64, 48, mediatest.Pattern(64, 48, i), time.Duration(i)*40*time.Millisecond); err != nil || len(pkts) != 1 {
				t.Fatalf("%s frame %d: %v, %d packets", c, i, err, len(pkts))
			}
		}
		enc.Close()
	}
}

func TestTicks(t *testing.T) {
	for _, d := range []time.Duration{0, 40 * time.Millisecond, time.Second / 15, time.Second / 30, -time.Second / 7, 1001 * time.Second / 30000} {
		tk := ToTicks(d)
		if got := FromTicks(tk); ToTicks(got) != tk || (got-d).Abs() > 6*time.Microsecond {
			t.Errorf("%v -> %d ticks -> %v", d, tk, got)
		}
	}
	if ToTicks(time.Second/15) != 6000 {
		t.Errorf("1/15 s is %d ticks, want 6000", ToTicks(time.Second/15))
	}
}
