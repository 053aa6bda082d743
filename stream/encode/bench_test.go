package encode

import (
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/mediatest"
)

// BenchmarkEncodeH264_1080p measures one 1080p frame through the encoder
// (RGB -> YUV conversion included), with the WebRTC settings (constrained
// baseline, veryfast, zerolatency) and the file settings (high profile,
// veryfast, lookahead).
func BenchmarkEncodeH264_1080p(b *testing.B) {
	pics := mediatest.HDPictures()
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
	pics := mediatest.HDPictures()
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
