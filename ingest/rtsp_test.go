package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/internal/testserver"
)

// The RTSP tests run FFmpeg's RTSP client (through Runner and decode)
// against a real gortsplib server on loopback.

const (
	clipW, clipH = 160, 120
	clipFPS      = 20
)

func rtspConfig(transport string) Config {
	return Config{
		Transport:   transport,
		OpenTimeout: 5 * time.Second,
		ReadTimeout: 2 * time.Second,
		MinBackoff:  100 * time.Millisecond,
		MaxBackoff:  400 * time.Millisecond,
	}
}

func rtspSource(t *testing.T, url string) Source {
	t.Helper()
	src, err := Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestRTSPFramesArrive(t *testing.T) {
	clip := makeH264Clip(t, clipW, clipH, clipFPS, 40)
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			checkNoLeaks(t)
			srv := startRTSPServer(t, clip, clipFPS, "", "")
			x := startRunner(t, rtspSource(t, srv.URL("/cam")), rtspConfig(transport))
			frames := x.collect(t, 15, 10*time.Second)
			checkSeqAndPTS(t, frames, 0)
			for _, f := range frames {
				if f.Width != clipW || f.Height != clipH || len(f.RGB) != clipW*clipH*3 {
					t.Fatalf("frame %d: %dx%d, %d bytes", f.Seq, f.Width, f.Height, len(f.RGB))
				}
				if f.StreamID != srv.URL("/cam") {
					t.Fatalf("stream id %q", f.StreamID)
				}
			}
			// 20 fps on the wire: 14 intervals of 50 ms, give or take jitter.
			if span := frames[14].PTS - frames[0].PTS; span < 600*time.Millisecond || span > 800*time.Millisecond {
				t.Errorf("15 frames span %v of pts, want about 700ms", span)
			}
			if x.r.State() != StateLive {
				t.Errorf("state %s while frames flow", x.r.State())
			}
			if err := x.stop(t); !isCanceled(err) {
				t.Errorf("Run after cancel: %v, want context.Canceled", err)
			}
			if x.r.State() != StateEnded {
				t.Errorf("state %s after cancel, want ended", x.r.State())
			}
			got := states(x.allEvents())
			if len(got) < 3 || got[0] != "connecting" || got[1] != "live" || got[len(got)-1] != "ended" {
				t.Errorf("states %v, want connecting, live, …, ended", got)
			}
		})
	}
}

// A camera that reboots: the server goes away mid-stream and comes back on
// the same port a second later. The runner must retry, go live again, and
// continue the frame numbering and the clock.
func TestRTSPReconnectsAfterServerRestart(t *testing.T) {
	clip := makeH264Clip(t, clipW, clipH, clipFPS, 40)
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			checkNoLeaks(t)
			srv := startRTSPServer(t, clip, clipFPS, "", "")
			x := startRunner(t, rtspSource(t, srv.URL("/cam")), rtspConfig(transport))
			before := x.collect(t, 10, 10*time.Second)
			x.waitState(t, StateLive, time.Second)

			srv.Close()
			down := time.Now()
			retry, _ := x.waitState(t, StateRetrying, 5*time.Second)
			noticed := time.Since(down)
			if retry.Err == nil || retry.Delay <= 0 || retry.Attempt != 1 {
				t.Errorf("retrying event %+v, want the drop's error, a delay and attempt 1", retry)
			}
			// The outage itself, not a wait for something: the server stays
			// away for a second while the runner retries.
			time.Sleep(time.Second)
			restart := time.Now()
			srv.Start()
			x.waitState(t, StateLive, 10*time.Second)
			t.Logf("%s: drop noticed after %v: %v", transport, noticed.Round(time.Millisecond), retry.Err)

			// Every frame in order, the first session's tail included, up
			// to the tenth of the new session.
			all, fresh := before, 0
			for fresh < 10 {
				f := x.collect(t, 1, 10*time.Second)[0]
				if f.Captured.After(restart) {
					fresh++
				}
				all = append(all, f)
			}
			checkSeqAndPTS(t, all, 0)
			if err := x.stop(t); !isCanceled(err) {
				t.Errorf("Run after cancel: %v", err)
			}
		})
	}
}

// A camera that hangs with its connection open must be noticed within the
// read timeout (FFmpeg alone waits 10 s on UDP), then retried.
func TestRTSPStalledServerIsADrop(t *testing.T) {
	clip := makeH264Clip(t, clipW, clipH, clipFPS, 40)
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			checkNoLeaks(t)
			srv := startRTSPServer(t, clip, clipFPS, "", "")
			cfg := rtspConfig(transport)
			cfg.ReadTimeout = time.Second
			x := startRunner(t, rtspSource(t, srv.URL("/cam")), cfg)
			x.collect(t, 5, 10*time.Second)
			srv.Frozen.Store(true)
			froze := time.Now()
			retry, _ := x.waitState(t, StateRetrying, 5*time.Second)
			if took := time.Since(froze); took > 2*time.Second {
				t.Errorf("a stall of %v went unnoticed past the 1s read timeout", took)
			}
			t.Logf("%s: stall noticed after %v: %v", transport, time.Since(froze).Round(time.Millisecond), retry.Err)
			if retry.Reason != ReasonTimedOut {
				t.Errorf("a stall's reason is %q, want %q", retry.Reason, ReasonTimedOut)
			}
			srv.Frozen.Store(false)
			x.waitState(t, StateLive, 10*time.Second)
			x.collect(t, 3, 10*time.Second)
		})
	}
}

func TestRTSPUnreachableRetriesUntilCancelled(t *testing.T) {
	refused := "rtsp://127.0.0.1:" + closedPort(t) + "/cam"
	// A wrong path (404) waits the longest at once: TestRTSPNotFoundSaysCheckThePath.
	for name, url := range map[string]string{"refused": refused} {
		t.Run(name, func(t *testing.T) {
			checkNoLeaks(t)
			x := startRunner(t, rtspSource(t, url), rtspConfig("tcp"))
			first, _ := x.waitState(t, StateRetrying, 5*time.Second)
			second, _ := x.waitState(t, StateRetrying, 5*time.Second)
			if first.Err == nil || !strings.Contains(first.Err.Error(), url) {
				t.Errorf("retry error %v should name %s", first.Err, url)
			}
			if second.Attempt != first.Attempt+1 || second.Delay <= first.Delay {
				t.Errorf("backoff does not grow: %+v then %+v", first, second)
			}
			t.Logf("%s: %v", name, first.Err)
			if err := x.stop(t); !isCanceled(err) {
				t.Errorf("Run after cancel: %v", err)
			}
			if x.r.State() != StateEnded {
				t.Errorf("state %s after cancel", x.r.State())
			}
		})
	}
}

func TestRTSPGivesUpAfterMaxAttempts(t *testing.T) {
	checkNoLeaks(t)
	cfg := rtspConfig("tcp")
	cfg.MinBackoff, cfg.MaxBackoff, cfg.MaxAttempts = 10*time.Millisecond, 20*time.Millisecond, 3
	x := startRunner(t, rtspSource(t, "rtsp://127.0.0.1:"+closedPort(t)+"/cam"), cfg)
	err := x.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "giving up after 3") {
		t.Fatalf("Run: %v, want giving up after 3 attempts", err)
	}
	if x.r.State() != StateFailed {
		t.Errorf("state %s, want failed", x.r.State())
	}
	retries := 0
	for _, e := range x.allEvents() {
		if e.State == StateRetrying {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retries before giving up, want 2", retries)
	}
}

// A server that accepts the connection and never answers: the open
// timeout makes it a retry, and a cancel cuts a hanging open at once.
func TestRTSPSilentServer(t *testing.T) {
	checkNoLeaks(t)
	addr := testserver.Silent(t)
	cfg := rtspConfig("tcp")
	cfg.OpenTimeout = 500 * time.Millisecond
	x := startRunner(t, rtspSource(t, "rtsp://"+addr+"/cam"), cfg)
	retry, _ := x.waitState(t, StateRetrying, 4*time.Second)
	if retry.Err == nil || !strings.Contains(retry.Err.Error(), "timed out (no answer within the open timeout") || retry.Reason != ReasonTimedOut {
		t.Errorf("retry error %v (reason %q) should say the open timed out", retry.Err, retry.Reason)
	}
	x.stop(t)

	// FFmpeg's socket timeout (half the read timeout) before the open
	// timeout: FFmpeg calls that invalid data; it is a time out.
	cfg.OpenTimeout, cfg.ReadTimeout = 5*time.Second, 600*time.Millisecond
	z := startRunner(t, rtspSource(t, "rtsp://"+addr+"/cam"), cfg)
	retry, _ = z.waitState(t, StateRetrying, 4*time.Second)
	if msg := fmt.Sprint(retry.Err); !strings.Contains(msg, "timed out") || strings.Contains(strings.ToLower(msg), "invalid data") || retry.Reason != ReasonTimedOut {
		t.Errorf("retry error %q (reason %q): want timed out, not invalid data", msg, retry.Reason)
	}
	if logs := z.logs.String(); !strings.Contains(logs, `reason="timed out"`) {
		t.Errorf("the log should say timed out:\n%s", logs)
	}
	z.stop(t)

	cfg.OpenTimeout = time.Minute
	y := startRunner(t, rtspSource(t, "rtsp://"+addr+"/cam"), cfg)
	y.waitState(t, StateConnecting, time.Second)
	// Let the open hang inside FFmpeg (the server never answers) before
	// cancelling: what is measured is how fast a cancel cuts a hung open.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := y.stop(t); !isCanceled(err) {
		t.Errorf("Run after cancel: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancel took %v to cut a hanging open", took)
	}
}

func TestRTSPCredentials(t *testing.T) {
	checkNoLeaks(t)
	// FFmpeg's own messages go to slog's default logger: catch them too.
	ffmpegLog := &syncBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(ffmpegLog, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	const pass, wrong = "s3cret-pw", "wr0ng-pw"
	clip := makeH264Clip(t, clipW, clipH, clipFPS, 20)
	srv := startRTSPServer(t, clip, clipFPS, "cam", pass)
	good := strings.Replace(srv.URL("/cam"), "rtsp://", "rtsp://cam:"+pass+"@", 1)
	bad := strings.Replace(srv.URL("/cam"), "rtsp://", "rtsp://cam:"+wrong+"@", 1)

	x := startRunner(t, rtspSource(t, good), rtspConfig("tcp"))
	frames := x.collect(t, 5, 10*time.Second)
	for _, f := range frames {
		mustNotContain(t, "stream id", f.StreamID, pass)
	}
	x.stop(t)

	// A refused password is reported as unauthorized and retried after
	// the longest backoff, not the shortest.
	y := startRunner(t, rtspSource(t, bad), rtspConfig("tcp"))
	retry, _ := y.waitState(t, StateRetrying, 5*time.Second)
	if retry.Err == nil || !strings.Contains(retry.Err.Error(), "unauthorized") || !strings.Contains(retry.Err.Error(), "401") {
		t.Errorf("wrong password: %v, want unauthorized and the server's 401", retry.Err)
	}
	if !errors.Is(retry.Err, decode.ErrUnauthorized) || retry.Reason != ReasonUnauthorized {
		t.Errorf("wrong password: reason %q, error %v; want unauthorized", retry.Reason, retry.Err)
	}
	if max := rtspConfig("tcp").MaxBackoff; retry.Attempt != 1 || retry.Delay != max {
		t.Errorf("first retry after a 401: attempt %d in %v, want attempt 1 in the longest backoff %v", retry.Attempt, retry.Delay, max)
	}
	if !strings.Contains(y.logs.String(), "reason=unauthorized") {
		t.Errorf("the log should say unauthorized:\n%s", y.logs)
	}
	err := y.stop(t)

	// A secret in the query (?token=, ?password=, ?key=) is hidden like
	// a password: in the stream name, state events, errors and logs,
	// FFmpeg's own included.
	const token, apiKey = "t0ken-value", "k3y-value"
	q := srv.URL("/nope") + "?token=" + token + "&channel=1&api_key=" + apiKey
	z := startRunner(t, rtspSource(t, q), rtspConfig("tcp"))
	zr, _ := z.waitState(t, StateRetrying, 5*time.Second)
	zerr := z.stop(t)
	if zr.Err == nil || !strings.Contains(zr.Err.Error(), "token=xxxxx&channel=1&api_key=xxxxx") {
		t.Errorf("query error %v should name the URL with its secrets hidden", zr.Err)
	}
	for _, e := range z.allEvents() {
		mustNotContain(t, "state event", fmt.Sprint(e.Err)+e.Source, token, apiKey)
	}
	mustNotContain(t, "query source", zr.Source+fmt.Sprint(zerr)+rtspSource(t, q).String(), token, apiKey)
	mustNotContain(t, "query runner log", z.logs.String(), token, apiKey)
	mustNotContain(t, "query ffmpeg log", ffmpegLog.String(), token, apiKey)

	for _, e := range append(x.allEvents(), y.allEvents()...) {
		if e.Err != nil {
			mustNotContain(t, "state event", e.Err.Error()+e.Source, pass, wrong)
		}
	}
	mustNotContain(t, "Run's error", errors.Join(err, x.err).Error(), pass, wrong)
	mustNotContain(t, "runner log", x.logs.String()+y.logs.String(), pass, wrong)
	mustNotContain(t, "ffmpeg log", ffmpegLog.String(), pass, wrong)
	mustNotContain(t, "source", rtspSource(t, good).String(), pass)
	if !strings.Contains(y.logs.String(), "cam:xxxxx@") {
		t.Errorf("the log should still name the user and host:\n%s", y.logs)
	}
}

// A camera whose keyframes are seconds apart sends data all the while but
// no picture can be decoded until the next keyframe: that is no stall,
// however short the read timeout.
func TestRTSPLongGOPIsNoStall(t *testing.T) {
	checkNoLeaks(t)
	const gop = 3 * clipFPS // 3 s between keyframes
	clip := makeH264ClipGOP(t, clipW, clipH, clipFPS, 2*gop, gop)
	srv := startRTSPServer(t, clip, clipFPS, "", "")
	// Join just after a keyframe went by: the longest wait.
	time.Sleep(200 * time.Millisecond)
	cfg := rtspConfig("tcp")
	cfg.ReadTimeout = time.Second
	x := startRunner(t, rtspSource(t, srv.URL("/cam")), cfg)
	_, before := x.waitState(t, StateLive, 8*time.Second)
	for _, e := range before {
		if e.State == StateRetrying {
			t.Fatalf("retried while waiting for a keyframe: %v", e.Err)
		}
	}
	x.collect(t, 5, 5*time.Second)
}

// With FFmpeg's own socket timeout switched off, the runner's watchdog
// alone must cut the blocked read.
func TestRTSPWatchdogWithoutSocketTimeout(t *testing.T) {
	checkNoLeaks(t)
	clip := makeH264Clip(t, clipW, clipH, clipFPS, 40)
	srv := startRTSPServer(t, clip, clipFPS, "", "")
	src := rtspSource(t, srv.URL("/cam"))
	src.Options["timeout"] = "0" // FFmpeg: wait forever
	cfg := rtspConfig("tcp")
	cfg.ReadTimeout = time.Second
	x := startRunner(t, src, cfg)
	x.collect(t, 5, 10*time.Second)
	srv.Frozen.Store(true)
	froze := time.Now()
	retry, _ := x.waitState(t, StateRetrying, 5*time.Second)
	if took := time.Since(froze); took > 2*time.Second {
		t.Errorf("the watchdog took %v to see a 1s stall", took)
	}
	if retry.Err == nil || !strings.Contains(retry.Err.Error(), "no data within the read timeout") || retry.Reason != ReasonTimedOut {
		t.Errorf("retry error %v (reason %q) should be the watchdog's time out", retry.Err, retry.Reason)
	}
}
