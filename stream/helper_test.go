package stream

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// helperEnv makes the test binary act as a child process that is
// interrupted or killed for real (see TestMain).
const helperEnv = "HTCSTREAM_STREAM_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "mp4-sigint":
		os.Exit(mp4SigintChild(os.Getenv("HELPER_PATH")))
	case "jsonl-kill":
		os.Exit(jsonlKillChild(os.Getenv("HELPER_PATH")))
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// mp4SigintChild records frames until SIGINT, whose handler closes the sink
// while the main loop is still writing, as the pipeline does. It prints
// "ready" after 3 frames and "frames N" (the writes that succeeded) at the
// end.
func mp4SigintChild(path string) int {
	s, err := NewFileSink(path, FileSinkConfig{FrameRate: 25})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	closed := make(chan error, 1)
	go func() {
		<-sig
		closed <- s.Close()
	}()
	n := 0
	for i := 0; ; i++ {
		err := s.WriteFrame(64, 48, pattern(64, 48, i), time.Duration(i)*40*time.Millisecond)
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n++
		if n == 3 {
			fmt.Println("ready")
		}
		if i > 5000 {
			fmt.Fprintln(os.Stderr, "no SIGINT came")
			return 1
		}
	}
	if err := <-closed; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("frames", n)
	return 0
}

// jsonlKillChild writes 3 lines, then kills itself with SIGKILL: no Close,
// no deferred code, no runtime shutdown.
func jsonlKillChild(path string) int {
	s, err := NewJSONSink(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := 0; i < 3; i++ {
		if err := s.Write(sampleFrame(int64(i))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	time.Sleep(10 * time.Second)
	return 3
}

// helperCmd runs this test binary as the named helper.
func helperCmd(t *testing.T, helper, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+helper, "HELPER_PATH="+path)
	return cmd
}

// pattern is a smooth moving RGB picture: sines with periods of about a
// hundred pixels whatever the frame size, shifted with i. (Periods
// relative to the size would make a tiny frame all edges, which 4:2:0
// chroma cannot keep.)
func pattern(w, h, i int) []byte {
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

// psnr of b against a over the w x h top-left part of b, whose rows are
// bw pixels wide.
func psnr(a []byte, w, h int, b []byte, bw int) float64 {
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

// probeInfo is what ffprobe says about a video file's first stream.
type probeInfo struct {
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

func (p probeInfo) frames(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(p.Streams[0].NbReadFrames)
	if err != nil {
		t.Fatalf("ffprobe frame count %q: %v", p.Streams[0].NbReadFrames, err)
	}
	return n
}

// probe runs ffprobe, which must exit 0 and find one video stream.
func probe(t *testing.T, path string, args ...string) probeInfo {
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
	var info probeInfo
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, out)
	}
	if len(info.Streams) != 1 {
		t.Fatalf("ffprobe found %d streams in %s, want 1", len(info.Streams), path)
	}
	return info
}

func decodeFile(t *testing.T, path string) []*decode.Frame {
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

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}
