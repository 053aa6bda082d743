package decode

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/testserver"
)

func TestOpenContextAbortsAHangingOpen(t *testing.T) {
	for _, scheme := range []string{"http", "rtsp"} {
		t.Run(scheme, func(t *testing.T) {
			url := scheme + "://user:secret@" + testserver.Silent(t) + "/cam"
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			d, err := OpenContext(ctx, url, Options{})
			took := time.Since(start)
			if err == nil {
				d.Close()
				t.Fatal("open of a silent server succeeded")
			}
			if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
				t.Errorf("error %q should wrap ErrInterrupted, ErrTimeout and the deadline", err)
			}
			if !strings.Contains(err.Error(), "timed out") {
				t.Errorf("error %q should say it timed out", err)
			}
			if strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "user:xxxxx@") {
				t.Errorf("error %q should name the URL without its password", err)
			}
			// FFmpeg polls the flag every 100 ms in its network code.
			if took > 5*time.Second {
				t.Errorf("open took %v after a 300ms deadline", took)
			}
		})
	}
}

// A server that accepts and never answers, with FFmpeg's own socket
// timeout shorter than any deadline: FFmpeg's RTSP client calls that
// "invalid data" (no reply, no valid status); the error says timed out.
func TestOpenSocketTimeoutIsATimeout(t *testing.T) {
	for _, tc := range []struct{ scheme, option string }{{"rtsp", "timeout"}, {"http", "rw_timeout"}} {
		t.Run(tc.scheme, func(t *testing.T) {
			url := tc.scheme + "://" + testserver.Silent(t) + "/cam"
			_, err := Open(url, Options{Input: map[string]string{tc.option: "300000"}})
			if err == nil {
				t.Fatal("open of a silent server succeeded")
			}
			if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "timed out") || strings.Contains(strings.ToLower(err.Error()), "invalid data") {
				t.Errorf("error %q should be a time out, not invalid data", err)
			}
			t.Log(err)
		})
	}
}

func TestInterruptCutsABlockingRead(t *testing.T) {
	// Long enough that the first half outlasts FFmpeg's stream probing
	// (about 20 frames), which would otherwise be what blocks.
	clip := makeVideo(t, "frag.mp4", "testsrc2=s=64x48:r=10:d=8",
		"-c:v", "libx264", "-g", "5", "-movflags", "+frag_keyframe+empty_moov")
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	// The server sends the first half and then holds the connection open
	// without a byte more: FFmpeg's read blocks.
	hold := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	defer close(hold)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := OpenContext(ctx, "http://"+ln.Addr().String()+"/clip.mp4", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	timer := time.AfterFunc(time.Second, d.Interrupt)
	defer timer.Stop()
	start := time.Now()
	n := 0
	for {
		_, err = d.Next()
		if err != nil {
			break
		}
		n++
	}
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("after %d frames: %v, want an error wrapping ErrInterrupted", n, err)
	}
	if n == 0 {
		t.Error("no frame came before the server went silent")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Next returned %v after the interrupt was due", took-time.Second)
	}
	d.Interrupt() // still safe after the fact
	d.Close()
	d.Interrupt() // and after Close
}

func TestTruncatedFileKeepsItsFramesAndSaysSo(t *testing.T) {
	cases := []struct{ name, out string }{
		{"faststart.mp4", "-movflags"},
		{"clip.mkv", ""},
		{"clip.avi", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"-c:v", "libx264", "-g", "5", "-bf", "0"}
			if c.out != "" {
				args = append(args, c.out, "+faststart")
			}
			whole := makeVideo(t, c.name, "testsrc2=s=64x48:r=10:d=4", args...)
			all, err := decodeAll(t, whole)
			if err != nil || len(all) != 40 {
				t.Fatalf("whole file: %d frames, %v", len(all), err)
			}
			data, err := os.ReadFile(whole)
			if err != nil {
				t.Fatal(err)
			}
			cut := whole + ".cut" + c.name[strings.LastIndex(c.name, "."):]
			if err := os.WriteFile(cut, data[:len(data)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			frames, err := decodeAll(t, cut)
			if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), cut) {
				t.Fatalf("truncated file: %v, want ErrTruncated naming %s", err, cut)
			}
			if len(frames) < 5 || len(frames) >= 40 {
				t.Fatalf("truncated file gave %d frames, want the first half's", len(frames))
			}
			// The last picture may be the one the cut went through, decoded
			// with FFmpeg's concealment; every one before it is whole.
			for i, f := range frames[:len(frames)-1] {
				if f.PTS != all[i].PTS || string(f.RGB[:64]) != string(all[i].RGB[:64]) {
					t.Fatalf("frame %d differs from the whole file's", i)
				}
			}
			// The error comes once, after the frames, and stays.
			if _, again := decodeAllAfter(t, cut, len(frames)); !errors.Is(again, ErrTruncated) {
				t.Fatalf("Next after the error: %v", again)
			}
		})
	}
}

// decodeAllAfter reads n frames and then calls Next twice more, returning
// the second error.
func decodeAllAfter(t *testing.T, path string, n int) (int, error) {
	t.Helper()
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := 0; i < n; i++ {
		if _, err := d.Next(); err != nil {
			return i, err
		}
	}
	if _, err := d.Next(); err == nil || errors.Is(err, io.EOF) {
		return n, err
	}
	_, err = d.Next()
	return n, err
}

// The truncation check reads FFmpeg fields through go-astiav's private
// layout; this fails first if a go-astiav upgrade moves it.
func TestRawFormatContext(t *testing.T) {
	path := makeVideo(t, "two.mkv", "testsrc2=s=64x48:r=5:d=1", "-c:v", "mjpeg")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got, want := rawNbStreams(d.fc), d.fc.NbStreams(); got != want {
		t.Fatalf("raw AVFormatContext says %d streams, go-astiav %d", got, want)
	}
	if d.declared < 900*time.Millisecond || d.declared > 1100*time.Millisecond {
		t.Errorf("declared length %v, want about 1s", d.declared)
	}
}
