// Package mediatest holds the media fixtures of the tests that encode,
// record or stream video: generated pictures, ffprobe's view of a file and
// its decoded frames. Test code only; nothing here is downloaded or
// stored, every picture is computed.
package mediatest

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/htcstream/htcstream/decode"
)

// Pattern is a smooth moving RGB picture: sines with periods of about a
// hundred pixels whatever the frame size, shifted with i. (Periods
// relative to the size would make a tiny frame all edges, which 4:2:0
// chroma cannot keep.)
func Pattern(w, h, i int) []byte {
	p := make([]byte, w*h*3)
	ph := float64(i) * 0.03
	sx := make([]float64, w)
	for x := range sx {
		sx[x] = math.Sin(2 * math.Pi * (float64(x)/96 + ph))
	}
	for y := 0; y < h; y++ {
		sy := math.Sin(2 * math.Pi * (float64(y)/80 - ph))
		for x := 0; x < w; x++ {
			o := (y*w + x) * 3
			p[o] = byte(128 + 90*sx[x])
			p[o+1] = byte(128 + 90*sy)
			p[o+2] = byte(128 + 60*math.Sin(2*math.Pi*float64(x+y)/150))
		}
	}
	return p
}

var (
	hdOnce   sync.Once
	hdFrames [][]byte
)

// HDPictures are 8 moving 1080p pictures with a little per-frame noise, as
// a camera gives: the noise keeps the encoder from coding pure motion.
// They are made once and shared: callers must not modify them.
func HDPictures() [][]byte {
	hdOnce.Do(func() {
		seed := uint32(1)
		for i := 0; i < 8; i++ {
			p := Pattern(1920, 1080, i)
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

// PSNR of b against a over the w x h top-left part of b, whose rows are
// bw pixels wide.
func PSNR(a []byte, w, h int, b []byte, bw int) float64 {
	var se float64
	for y := 0; y < h; y++ {
		for x := 0; x < w*3; x++ {
			d := float64(a[y*w*3+x]) - float64(b[y*bw*3+x])
			se += d * d
		}
	}
	mse := se / float64(w*h*3)
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(255*255/mse)
}

// ProbeInfo is what ffprobe says about a video file's first stream.
type ProbeInfo struct {
	Streams []struct {
		CodecName    string `json:"codec_name"`
		Profile      string `json:"profile"`
		Width        int    `json:"width"`
		Height       int    `json:"height"`
		PixFmt       string `json:"pix_fmt"`
		RFrameRate   string `json:"r_frame_rate"`
		AvgFrameRate string `json:"avg_frame_rate"`
		NbReadFrames string `json:"nb_read_frames"`
	} `json:"streams"`
	Format struct {
		FormatName string `json:"format_name"`
		Duration   string `json:"duration"`
	} `json:"format"`
}

// Frames is the number of frames ffprobe counted.
func (p ProbeInfo) Frames(t testing.TB) int {
	t.Helper()
	n, err := strconv.Atoi(p.Streams[0].NbReadFrames)
	if err != nil {
		t.Fatalf("ffprobe frame count %q: %v", p.Streams[0].NbReadFrames, err)
	}
	return n
}

// Probe runs ffprobe, which must exit 0 and find one video stream.
func Probe(t testing.TB, path string, args ...string) ProbeInfo {
	t.Helper()
	args = append([]string{"-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json"}, args...)
	out, err := exec.Command("ffprobe", append(args, path)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("ffprobe %s: %v\n%s", path, err, ee.Stderr)
		}
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var info ProbeInfo
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, out)
	}
	if len(info.Streams) != 1 {
		t.Fatalf("ffprobe found %d streams in %s, want 1", len(info.Streams), path)
	}
	return info
}

// DecodeFile decodes every frame of a video file with the decode package.
func DecodeFile(t testing.TB, path string) []*decode.Frame {
	t.Helper()
	d, err := decode.Open(path, decode.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var frames []*decode.Frame
	for {
		f, err := d.Next()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatalf("decode %s: %v", path, err)
		}
		frames = append(frames, f)
	}
}

// CountPackets counts the video packets ffprobe reads in path, quietly: it
// fails, rather than the test, while a growing fragmented MP4 holds no
// whole fragment yet, so a test can poll it.
func CountPackets(path string) (int, error) {
	out, err := exec.Command("ffprobe", "-v", "quiet", "-select_streams", "v:0", "-count_packets",
		"-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path).Output()
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}
