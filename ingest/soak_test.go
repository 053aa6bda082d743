package ingest

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// BenchmarkSoak decodes a file over and over — a new Runner, decoder and
// swscale context each pass — for HTCSTREAM_SOAK (a Go duration, default
// 10s) and reports resident memory at the start, after warm-up and at the
// end. Every native object freed exactly once shows as a flat line:
// rss_growth_MiB (end minus warm) near zero however long the soak.
//
//	go test ./ingest -run '^$' -bench Soak
//	HTCSTREAM_SOAK=10m go test ./ingest -run '^$' -bench Soak -timeout 0
func BenchmarkSoak(b *testing.B) {
	dur := 10 * time.Second
	if env := os.Getenv("HTCSTREAM_SOAK"); env != "" {
		d, err := time.ParseDuration(env)
		if err != nil || d <= 0 {
			b.Fatalf("HTCSTREAM_SOAK=%q: want a duration such as 30s or 10m", env)
		}
		dur = d
	}
	path := ffmpegMake(b, b.TempDir()+"/soak.mp4", "testsrc2=s=320x240:r=25:d=2",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25")
	src := Source{Kind: File, Location: path}
	quiet := Config{Logger: slog.New(slog.DiscardHandler)}

	pass := func() int {
		r, err := NewRunner(src, quiet)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		if err := r.Run(context.Background(), func(*decode.Frame) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		return n
	}

	runtime.GC()
	start := rssMiB(b)
	var warm float64
	peak := start
	frames, passes := 0, 0
	b.ResetTimer()
	began := time.Now()
	warmAt := began.Add(dur / 10)
	for time.Since(began) < dur {
		frames += pass()
		passes++
		if warm == 0 && time.Now().After(warmAt) {
			runtime.GC()
			warm = rssMiB(b)
		}
		peak = max(peak, rssMiB(b))
	}
	elapsed := time.Since(began)
	b.StopTimer()
	runtime.GC()
	end := rssMiB(b)
	if warm == 0 {
		warm = end
	}
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(frames), "ns/frame")
	b.ReportMetric(float64(frames)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(passes), "opens")
	b.ReportMetric(start, "rss_start_MiB")
	b.ReportMetric(warm, "rss_warm_MiB")
	b.ReportMetric(end, "rss_end_MiB")
	b.ReportMetric(peak, "rss_peak_MiB")
	b.ReportMetric(end-warm, "rss_growth_MiB")
}

// rssMiB reads the process's resident set from /proc/self/statm.
func rssMiB(b *testing.B) float64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatalf("resident memory: %v", err)
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		b.Fatalf("/proc/self/statm: %q", data)
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		b.Fatalf("/proc/self/statm: %v", err)
	}
	return float64(pages*int64(os.Getpagesize())) / (1 << 20)
}
