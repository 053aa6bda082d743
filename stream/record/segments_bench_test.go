package record

import (
	"errors"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
)

// BenchmarkRecorder1080p measures what source-mode recording costs: a 1080p25
// H.264 camera's packets (demuxed once, up front) through Begin/Packet and
// the writer into fragmented MP4 segments. It reports the process CPU time
// per second of video as a share of one core (goal: under 2 % a camera).
func BenchmarkRecorder1080p(b *testing.B) {
	src := filepath.Join(b.TempDir(), "cam.mp4")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=1920x1080:r=25:d=10",
		"-c:v", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-g", "50", "-pix_fmt", "yuv420p", src).CombinedOutput(); err != nil {
		b.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	fc := astiav.AllocFormatContext()
	if err := fc.OpenInput(src, nil, nil); err != nil {
		b.Fatal(err)
	}
	defer fc.CloseInput()
	if err := fc.FindStreamInfo(nil); err != nil {
		b.Fatal(err)
	}
	st := fc.Streams()[0]
	var pkts []*astiav.Packet
	for {
		p := astiav.AllocPacket()
		if err := fc.ReadFrame(p); err != nil {
			p.Free()
			if errors.Is(err, astiav.ErrEof) {
				break
			}
			b.Fatal(err)
		}
		pkts = append(pkts, p)
	}
	defer func() {
		for _, p := range pkts {
			p.Free()
		}
	}()
	videoSeconds := float64(len(pkts)) / 25
	payload := 0
	for _, p := range pkts {
		payload += p.Size()
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	var (
		used    time.Duration
		onDisk  int64
		segsPer int
	)
	for i := 0; i < b.N; i++ {
		r, err := NewRecorder(SegmentConfig{Dir: b.TempDir(), Camera: "cam", Segment: 4 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		c0 := cpu()
		r.Begin(st.CodecParameters(), st.TimeBase())
		for _, p := range pkts {
			r.Packet(p)
		}
		r.End()
		r.Close()
		used += cpu() - c0
		s := r.Stats()
		if s.Packets != int64(len(pkts)) {
			b.Fatalf("wrote %d of %d packets", s.Packets, len(pkts))
		}
		onDisk, segsPer = s.DiskBytes, s.Files
	}
	b.ReportMetric(100*used.Seconds()/(videoSeconds*float64(b.N)), "core%/camera")
	// what the MP4 boxes (fragments, indexes) add to the camera's bytes
	b.ReportMetric(100*float64(onDisk-int64(payload))/float64(payload), "overhead%")
	b.ReportMetric(float64(onDisk)/float64(segsPer)/1e6, "MB/segment")
}
