package stream

import (
	"sync"
	"testing"
	"time"
)

var (
	hdOnce   sync.Once
	hdFrames [][]byte
)

// hdPictures are 8 moving 1080p pictures with a little per-frame noise, as
// a camera gives: the noise keeps the encoder from coding pure motion.
func hdPictures() [][]byte {
	hdOnce.Do(func() {
		seed := uint32(1)
		for i := 0; i < 8; i++ {
			p := pattern(1920, 1080, i)
			for j := range p {
				seed = seed*1664525 + 1013904223
				v := int(p[j]) + int(seed>>29) - 4
				p[j] = byte(min(max(v, 0), 255))
			}
			hdFrames = append(hdFrames, p)
		}
	})
	return hdFrames
}

// BenchmarkEncodeH264_1080p measures one 1080p frame through the encoder
// (RGB -> YUV conversion included), with the WebRTC settings (constrained
// baseline, veryfast, zerolatency) and the file settings (high profile,
// veryfast, lookahead).
func BenchmarkEncodeH264_1080p(b *testing.B) {
	pics := hdPictures()
	for _, c := range []struct {
		name string
		cfg  EncoderConfig
	}{{"webrtc", EncoderConfig{}}, {"file", EncoderConfig{forFile: true}}} {
		b.Run(c.name, func(b *testing.B) {
			e, err := NewEncoder(c.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			// The first frame opens the codec; steady state is what counts.
			if _, err := e.Encode(1920, 1080, pics[0], 0); err != nil {
				b.Fatal(err)
			}
			var bytes int
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				pkts, err := e.Encode(1920, 1080, pics[i%len(pics)], time.Duration(i)*time.Second/30)
				if err != nil {
					b.Fatal(err)
				}
				for _, p := range pkts {
					bytes += len(p.Data)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(bytes)/float64(b.N), "B/frame")
		})
	}
}

// BenchmarkRGBToYUV_1080p measures the conversion alone (the padded copy
// and swscale), the part of the encode cost that is not x264's.
func BenchmarkRGBToYUV_1080p(b *testing.B) {
	pics := hdPictures()
	e, err := NewEncoder(EncoderConfig{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Encode(1920, 1080, pics[0], 0); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.yuv.convert(e.frame, pics[i%len(pics)], 1920, 1080); err != nil {
			b.Fatal(err)
		}
	}
}
