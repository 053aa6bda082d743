package ingest

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
)

// Issue 21 item 4: a wrong path (the server answers 404) was retried every
// 0.5-10 s with no hint. It says "check the stream path" and waits the
// longest backoff, as a 401 does.
func TestRTSPNotFoundSaysCheckThePath(t *testing.T) {
	checkNoLeaks(t)
	srv := startRTSPServer(t, makeH264Clip(t, clipW, clipH, clipFPS, 20), clipFPS, "", "")
	x := startRunner(t, rtspSource(t, srv.URL("/nosuchmount")), rtspConfig("tcp"))
	retry, _ := x.waitState(t, StateRetrying, 5*time.Second)
	if retry.Err == nil || !strings.Contains(retry.Err.Error(), "check the stream path") || !strings.Contains(retry.Err.Error(), "404") {
		t.Errorf("wrong path: %v, want a hint to check the stream path", retry.Err)
	}
	if !errors.Is(retry.Err, decode.ErrNotFound) || retry.Reason != ReasonNotFound {
		t.Errorf("wrong path: reason %q, error %v; want not found", retry.Reason, retry.Err)
	}
	if max := rtspConfig("tcp").MaxBackoff; retry.Attempt != 1 || retry.Delay != max {
		t.Errorf("first retry after a 404: attempt %d in %v, want the longest backoff %v", retry.Attempt, retry.Delay, max)
	}
	if !strings.Contains(x.logs.String(), `reason="not found"`) {
		t.Errorf("the log should say not found:\n%s", x.logs)
	}
}

// rangeProxy stands between FFmpeg and the test server and adds
// "a=range:npt=0-<length>" to the SDP of the DESCRIBE answer, as a server
// replaying a recording does: FFmpeg then takes the stream for one of that
// length. cut closes every connection: the session drops.
type rangeProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	length string
}

func startRangeProxy(t *testing.T, upstream string, length time.Duration) *rangeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rangeProxy{ln: ln, length: strconv.FormatFloat(length.Seconds(), 'f', 3, 64)}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go io.Copy(u, c)
			go p.answers(c, u)
		}
	}()
	return p
}

// answers copies the server's answers to the client, the DESCRIBE one with
// the range added, then everything (interleaved RTP) as it comes.
func (p *rangeProxy) answers(c, u net.Conn) {
	defer c.Close()
	br := bufio.NewReader(u)
	for {
		tp := textproto.NewReader(br)
		status, err := tp.ReadLine()
		if err != nil {
			return
		}
		hdr, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		body := make([]byte, 0)
		if n, _ := strconv.Atoi(hdr.Get("Content-Length")); n > 0 {
			body = make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
		}
		sdp := hdr.Get("Content-Type") == "application/sdp"
		if sdp {
			s := string(body)
			i := strings.Index(s, "m=")
			body = []byte(s[:i] + "a=range:npt=0-" + p.length + "\r\n" + s[i:])
			hdr.Set("Content-Length", strconv.Itoa(len(body)))
		}
		var out strings.Builder
		out.WriteString(status + "\r\n")
		for k, vs := range hdr {
			for _, v := range vs {
				out.WriteString(k + ": " + v + "\r\n")
			}
		}
		out.WriteString("\r\n")
		if _, err := io.WriteString(c, out.String()); err != nil {
			return
		}
		if _, err := c.Write(body); err != nil {
			return
		}
		if sdp {
			io.Copy(c, br)
			return
		}
	}
}

func (p *rangeProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Issue 21 item 4: a dropped RTSP session of a stream that announced its
// length was logged as "file ends before its declared length (truncated)".
// Live sources never talk of files; and a normal end (cancel) carries no
// error.
func TestRTSPDropIsNoTruncatedFile(t *testing.T) {
	checkNoLeaks(t)
	srv := startRTSPServer(t, makeH264Clip(t, clipW, clipH, clipFPS, 40), clipFPS, "", "")
	p := startRangeProxy(t, strings.TrimPrefix(strings.TrimSuffix(srv.URL("/cam"), "/cam"), "rtsp://"), 30*time.Second)
	url := "rtsp://" + p.ln.Addr().String() + "/cam"
	x := startRunner(t, rtspSource(t, url), rtspConfig("tcp"))
	x.collect(t, 10, 10*time.Second)
	p.cut() // the session drops 0.5 s into its announced 30 s
	retry, _ := x.waitState(t, StateRetrying, 5*time.Second)
	if retry.Err == nil || errors.Is(retry.Err, decode.ErrTruncated) || strings.Contains(retry.Err.Error(), "file") {
		t.Errorf("drop of a live session: %v, want no talk of files", retry.Err)
	}
	x.waitState(t, StateLive, 10*time.Second)
	x.stop(t)
	for _, e := range x.allEvents() {
		if e.State == StateEnded && e.Err != nil {
			t.Errorf("the normal end carries an error: %v", e.Err)
		}
	}
	if strings.Contains(x.logs.String(), "file ends") || strings.Contains(x.logs.String(), "context canceled") {
		t.Errorf("log:\n%s", x.logs)
	}
}

// Issue 21 item 4: after the server came back, going live again took up to
// the full backoff (9 s seen). For a source live a moment ago the backoff
// is capped at a fifth of MaxBackoff; one never live backs off in full.
func TestRTSPBackoffCappedAfterLive(t *testing.T) {
	checkNoLeaks(t)
	srv := startRTSPServer(t, makeH264Clip(t, clipW, clipH, clipFPS, 40), clipFPS, "", "")
	cfg := rtspConfig("tcp")
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 2*time.Second // cap 400 ms
	x := startRunner(t, rtspSource(t, srv.URL("/cam")), cfg)
	x.collect(t, 5, 10*time.Second)
	srv.Close()
	var delays []time.Duration
	for len(delays) < 6 {
		e, _ := x.waitState(t, StateRetrying, 10*time.Second)
		delays = append(delays, e.Delay)
	}
	for i, d := range delays {
		if d > 400*time.Millisecond {
			t.Errorf("retry %d after a drop: %v, over the cap of 400ms (all %v)", i+1, d, delays)
		}
	}
	if delays[len(delays)-1] != 400*time.Millisecond {
		t.Errorf("the backoff did not grow to the cap: %v", delays)
	}
	srv.Start()
	x.waitState(t, StateLive, 5*time.Second)

	// Never live: the backoff grows past the cap.
	dead := startRunner(t, rtspSource(t, "rtsp://127.0.0.1:"+closedPort(t)+"/cam"), cfg)
	for {
		e, _ := dead.waitState(t, StateRetrying, 10*time.Second)
		if e.Delay > 400*time.Millisecond {
			break
		}
		if e.Attempt > 6 {
			t.Fatalf("a source never live: attempt %d waits %v, want past the cap by now", e.Attempt, e.Delay)
		}
	}
}
