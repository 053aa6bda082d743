package web

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"image/jpeg"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/syncbuf"
	"github.com/htcstream/htcstream/stream/encode"
)

// startServer serves a new hub behind a Server on an ephemeral loopback
// port; it returns the base URL without its trailing slash.
func startServer(t *testing.T, hcfg HubConfig, scfg ServerConfig, routes Routes) (*Hub, *Server, string) {
	t.Helper()
	h := newTestHub(t, hcfg)
	if scfg.Addr == "" {
		scfg.Addr = "127.0.0.1:0"
	}
	if scfg.Logger == nil {
		scfg.Logger = quietLogger()
	}
	routes.Hub = h
	srv, err := NewServer(scfg, routes)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, srv, strings.TrimSuffix(srv.URL(), "/")
}

// do sends a request with the given headers ("Host" sets the Host) and
// returns status, headers and body.
func do(t *testing.T, method, url string, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	res, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// grayFrame is a w x h RGB frame of one colour.
func grayFrame(w, h int, v byte) []byte {
	return bytes.Repeat([]byte{v}, w*h*3)
}

func TestServerRefusesToServeTheNetworkOpen(t *testing.T) {
	for _, c := range []struct {
		cfg  ServerConfig
		addr string // after defaults; "" for refused
	}{
		{ServerConfig{}, "127.0.0.1:8080"},
		{ServerConfig{Addr: ":0"}, "127.0.0.1:0"},
		{ServerConfig{Addr: "localhost:0"}, "localhost:0"},
		{ServerConfig{Addr: "[::1]:0"}, "[::1]:0"},
		{ServerConfig{Addr: ":0", Token: "t"}, ":0"},
		{ServerConfig{Addr: ":0", Insecure: true}, ":0"},
		{ServerConfig{Addr: "0.0.0.0:0"}, ""},
		{ServerConfig{Addr: "192.168.1.10:8080"}, ""},
		{ServerConfig{Addr: "camera-box.lan:8080"}, ""},
		{ServerConfig{Addr: "0.0.0.0:0", Users: map[string]string{"ann": "pw"}}, "0.0.0.0:0"},
	} {
		srv, err := NewServer(c.cfg, Routes{})
		if c.addr == "" {
			if !errors.Is(err, ErrNeedsAuth) || !strings.Contains(err.Error(), "token") {
				t.Errorf("%+v: %v, want ErrNeedsAuth", c.cfg, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%+v: %v", c.cfg, err)
			continue
		}
		if got := srv.Addr(); got != c.addr {
			t.Errorf("%+v: address %s, want %s", c.cfg, got, c.addr)
		}
	}
	for _, bad := range []ServerConfig{
		{TLSCert: "cert.pem"},
		{AllowedOrigins: []string{"*"}},
		{AllowedOrigins: []string{"dash.example"}},
		{Users: map[string]string{"a:b": "pw"}},
		{IdleTimeout: -time.Second},
		{Addr: "8080"},
	} {
		if _, err := NewServer(bad, Routes{}); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}

	// Insecure on every interface starts, with a warning no one can miss.
	var log syncbuf.Buffer
	srv, err := NewServer(ServerConfig{Addr: "0.0.0.0:0", Insecure: true,
		Logger: slog.New(slog.NewTextHandler(&log, nil))}, Routes{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.Contains(log.String(), "level=WARN") || !strings.Contains(log.String(), "WITHOUT AUTHENTICATION") {
		t.Errorf("no warning for an open server: %s", log.String())
	}
}

// With a token, WHEP through the pion client: no token 401, a wrong one
// 401, the right one 201 (and the DELETE needs it too); the same for
// /streams, /metrics and the snapshots, while the page stays public.
func TestServerTokenGuardsTheAPI(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "htcstream_up 1\n") })
	health := func() []SourceHealth { return []SourceHealth{{Name: "cam", State: "live", OK: true}} }
	hub, _, base := startServer(t, HubConfig{}, ServerConfig{Token: "s3cret"}, Routes{Metrics: metrics, Health: health})
	if err := hub.AddStream("cam", encode.EncoderConfig{}); err != nil {
		t.Fatal(err)
	}
	offer := minimalOffer(t)
	for _, c := range []struct {
		name string
		hdr  []string
	}{
		{"no token", nil},
		{"wrong token", []string{"Authorization", "Bearer s3cre"}},
		{"basic instead", []string{"Authorization", "Basic YTpz"}},
	} {
		code, hd, body := do(t, "POST", base+"/whep/cam", offer, append([]string{"Content-Type", "application/sdp"}, c.hdr...)...)
		if code != http.StatusUnauthorized || !strings.Contains(hd.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, "bearer token") {
			t.Errorf("%s: WHEP POST %d %v %q, want 401 with a Bearer challenge", c.name, code, hd, body)
		}
	}
	if n := hub.Sessions(); n != 0 {
		t.Fatalf("%d sessions from refused offers", n)
	}

	auth := http.Header{"Authorization": {"Bearer s3cret"}}
	v, err := dialViewerWith(base, "cam", auth, nil)
	if err != nil {
		t.Fatalf("WHEP with the token: %v", err) // dialViewer wants 201
	}
	defer v.PC.Close()
	if code, _, _ := do(t, "DELETE", v.Session, ""); code != http.StatusUnauthorized {
		t.Errorf("DELETE without the token: %d", code)
	}
	if code, err := v.Delete(); err != nil || code != http.StatusOK {
		t.Errorf("DELETE with the token: %d %v", code, err)
	}

	if err := hub.Publish("cam", 64, 48, grayFrame(64, 48, 200), 0, Summary{}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/streams", "/metrics", "/cameras/cam/latest.jpg", "/whep/cam/x", "/nowhere"} {
		if code, _, _ := do(t, "GET", base+path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d, want 401", path, code)
		}
	}
	if code, _, body := do(t, "GET", base+"/streams", "", "Authorization", "Bearer s3cret"); code != 200 || !strings.Contains(body, `"id":"cam"`) {
		t.Errorf("GET /streams with the token: %d %s", code, body)
	}
	if code, _, body := do(t, "GET", base+"/metrics", "", "Authorization", "bearer s3cret"); code != 200 || body != "htcstream_up 1\n" {
		t.Errorf("GET /metrics with the token: %d %s", code, body)
	}
	code, hd, body := do(t, "GET", base+"/cameras/cam/latest.jpg", "", "Authorization", "Bearer s3cret")
	if code != 200 || hd.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("snapshot: %d %v %q", code, hd, body)
	}
	img, err := jpeg.Decode(strings.NewReader(body))
	if err != nil || img.Bounds().Dx() != 64 || img.Bounds().Dy() != 48 {
		t.Fatalf("snapshot is not the 64x48 frame: %v %v", img.Bounds(), err)
	}
	if r, g, b, _ := img.At(10, 10).RGBA(); r>>8 < 190 || g>>8 < 190 || b>>8 < 190 {
		t.Errorf("snapshot pixel %d %d %d, want about 200", r>>8, g>>8, b>>8)
	}
	if code, _, body := do(t, "GET", base+"/cameras/nope/latest.jpg", "", "Authorization", "Bearer s3cret"); code != 404 || !strings.Contains(body, "no such stream") {
		t.Errorf("snapshot of an unknown camera: %d %s", code, body)
	}
	hub.AddStream("quiet", encode.EncoderConfig{})
	if code, _, body := do(t, "GET", base+"/cameras/quiet/latest.jpg", "", "Authorization", "Bearer s3cret"); code != 404 || !strings.Contains(body, "no frame") {
		t.Errorf("snapshot before a frame: %d %s", code, body)
	}

	// Public: the page, and /healthz without its details.
	if code, hd, _ := do(t, "GET", base+"/", ""); code != 200 || !strings.HasPrefix(hd.Get("Content-Type"), "text/html") {
		t.Errorf("GET / without the token: %d %v", code, hd)
	}
	var hz struct {
		Status  string         `json:"status"`
		Sources []SourceHealth `json:"sources"`
	}
	_, _, body = do(t, "GET", base+"/healthz", "")
	if err := json.Unmarshal([]byte(body), &hz); err != nil || hz.Status != "ok" || hz.Sources != nil {
		t.Errorf("public /healthz: %s %v", body, err)
	}
	_, _, body = do(t, "GET", base+"/healthz", "", "Authorization", "Bearer s3cret")
	if err := json.Unmarshal([]byte(body), &hz); err != nil || len(hz.Sources) != 1 || hz.Sources[0].State != "live" {
		t.Errorf("/healthz with the token: %s %v", body, err)
	}
}

func TestServerBasicAuthAndHealth(t *testing.T) {
	var mu sync.Mutex
	state := SourceHealth{Name: "door", State: "live", OK: true}
	health := func() []SourceHealth { mu.Lock(); defer mu.Unlock(); return []SourceHealth{state} }
	_, _, base := startServer(t, HubConfig{}, ServerConfig{Users: map[string]string{"ann": "pw1"}}, Routes{Health: health})
	get := func(user, pass string) int {
		req, _ := http.NewRequest("GET", base+"/streams", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		res, err := testClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == 401 && !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("401 without a Basic challenge: %v", res.Header)
		}
		return res.StatusCode
	}
	if c := get("", ""); c != 401 {
		t.Errorf("no user: %d", c)
	}
	if c := get("ann", "pw2"); c != 401 {
		t.Errorf("wrong password: %d", c)
	}
	if c := get("bob", "pw1"); c != 401 {
		t.Errorf("unknown user: %d", c)
	}
	if c := get("ann", "pw1"); c != 200 {
		t.Errorf("right user: %d", c)
	}
	mu.Lock()
	state = SourceHealth{Name: "door", State: "retrying", OK: false, Error: "connection refused"}
	mu.Unlock()
	code, _, body := do(t, "GET", base+"/healthz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "degraded") || strings.Contains(body, "door") {
		t.Errorf("public /healthz of a retrying source: %d %s", code, body)
	}
}

// DNS rebinding: a name that is not this machine's, an IP or allowed, is
// refused whatever it resolves to.
func TestServerChecksTheHostHeader(t *testing.T) {
	_, srv, base := startServer(t, HubConfig{}, ServerConfig{AllowedHosts: []string{"cams.example", ".lan"}}, Routes{})
	_, port, _ := net.SplitHostPort(srv.Addr())
	for host, want := range map[string]int{
		"attacker.example:" + port:  http.StatusMisdirectedRequest,
		"attacker.example":          http.StatusMisdirectedRequest,
		"cams.example.evil:" + port: http.StatusMisdirectedRequest,
		"127.0.0.1:" + port:         200,
		"localhost:" + port:         200,
		"[::1]:" + port:             200,
		"10.1.2.3:" + port:          200,
		"cams.example:" + port:      200,
		"CAMS.example.":             200,
		"nvr.lan:" + port:           200,
	} {
		code, _, body := do(t, "GET", base+"/streams", "", "Host", host)
		if code != want {
			t.Errorf("Host %s: %d %s, want %d", host, code, body, want)
		}
	}
}

// CORS: only a configured origin gets Access-Control-Allow-Origin, never
// "*"; other origins' preflights and state-changing requests are refused.
func TestServerCORSOnlyForAllowedOrigins(t *testing.T) {
	hub, _, base := startServer(t, HubConfig{}, ServerConfig{AllowedOrigins: []string{"https://Dash.example:8443"}}, Routes{})
	hub.AddStream("cam", encode.EncoderConfig{})
	const ok, other = "https://dash.example:8443", "https://evil.example"

	_, hd, _ := do(t, "GET", base+"/streams", "", "Origin", ok)
	if hd.Get("Access-Control-Allow-Origin") != ok || hd.Get("Access-Control-Expose-Headers") != "Location" || !strings.Contains(hd.Get("Vary"), "Origin") {
		t.Errorf("allowed origin: %v", hd)
	}
	code, hd, _ := do(t, "OPTIONS", base+"/whep/cam", "", "Origin", ok, "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization,content-type")
	if code != http.StatusNoContent || hd.Get("Access-Control-Allow-Origin") != ok ||
		!strings.Contains(hd.Get("Access-Control-Allow-Methods"), "DELETE") || !strings.Contains(hd.Get("Access-Control-Allow-Headers"), "Authorization") ||
		strings.Contains(hd.Get("Access-Control-Allow-Methods"), "PATCH") { // issue 21: every PATCH answers 405

		t.Errorf("preflight from the allowed origin: %d %v", code, hd)
	}

	for _, c := range []struct{ method, path string }{{"GET", "/streams"}, {"GET", "/"}, {"POST", "/whep/cam"}} {
		_, hd, _ := do(t, c.method, base+c.path, "", "Origin", other, "Content-Type", "application/sdp")
		if got := hd.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("%s %s from %s: Access-Control-Allow-Origin %q", c.method, c.path, other, got)
		}
	}
	if code, hd, _ := do(t, "OPTIONS", base+"/whep/cam", "", "Origin", other, "Access-Control-Request-Method", "POST"); code != http.StatusForbidden || hd.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v", code, hd)
	}
	// A simple cross-site POST needs no preflight; it is refused all the same.
	if code, _, body := do(t, "POST", base+"/whep/cam", "x", "Origin", other, "Content-Type", "text/plain"); code != http.StatusForbidden || !strings.Contains(body, "allowed origins") {
		t.Errorf("cross-site POST: %d %s", code, body)
	}
	// The page's own origin is not another one.
	if code, _, _ := do(t, "POST", base+"/whep/cam", "", "Origin", base, "Content-Type", "application/sdp"); code != http.StatusBadRequest {
		t.Errorf("same-origin POST of an empty offer: %d, want the hub's 400", code)
	}
}

// An idle keep-alive connection is closed after IdleTimeout; one that
// never sends its request, after ReadHeaderTimeout.
func TestServerClosesIdleConnections(t *testing.T) {
	_, srv, _ := startServer(t, HubConfig{}, ServerConfig{IdleTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 500 * time.Millisecond}, Routes{})
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Close {
		t.Fatalf("first response: %d, close %v", res.StatusCode, res.Close)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want the server to close it", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}

	silent, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a connection that sends nothing is kept")
	}
}

// rawGet sends GET path on c (with the token when not empty) and reads the
// response on br.
func rawGet(t *testing.T, c net.Conn, br *bufio.Reader, path, token string) (*http.Response, error) {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: localhost\r\n"+auth+"\r\n"); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res, nil
}

// waitIdle polls until n of the server's connections wait in keep-alive.
func waitIdle(t *testing.T, srv *Server, n int) {
	t.Helper()
	srv.mu.Lock()
	l := srv.conns
	srv.mu.Unlock()
	idle := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		k := 0
		for c := range l.conns {
			if c.idleSince.Load() != 0 {
				k++
			}
		}
		return k
	}
	deadline := time.Now().Add(10 * time.Second)
	for idle() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, want %d", idle(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOpen polls until the server holds n connections.
func waitOpen(t *testing.T, srv *Server, n int) {
	t.Helper()
	srv.mu.Lock()
	l := srv.conns
	srv.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for l.open() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the server holds %d connections, want %d", l.open(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MaxConns: beyond it a reserve serves only requests with credentials;
// beyond the reserve a client waits until a connection closes.
func TestServerLimitsConnections(t *testing.T) {
	const token = "0123456789abcdef-limits"
	_, srv, _ := startServer(t, HubConfig{}, ServerConfig{MaxConns: 2, MaxConnsPerIP: -1, Token: token}, Routes{})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	for range 2 {
		held = append(held, dial()) // silent: not idle, never evicted
	}
	waitOpen(t, srv, 2)
	anon := dial()
	if res, err := rawGet(t, anon, bufio.NewReader(anon), "/healthz", ""); err != nil || res.StatusCode != http.StatusServiceUnavailable || !res.Close {
		t.Fatalf("anonymous client beyond the limit: %v %v, want 503 and close", res, err)
	}
	authed := dial()
	br := bufio.NewReader(authed)
	for range 2 { // served, and kept alive
		if res, err := rawGet(t, authed, br, "/streams", token); err != nil || res.StatusCode != 200 {
			t.Fatalf("client with the token beyond the limit: %v %v", res, err)
		}
	}

	// Fill the reserve: max(16, 2/4) = 16 beyond the 2.
	authed.Close()
	waitOpen(t, srv, 2)
	for range 16 {
		held = append(held, dial())
	}
	waitOpen(t, srv, 18)
	waiting := dial()
	io.WriteString(waiting, "GET /streams HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "+token+"\r\n\r\n")
	waiting.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	wbr := bufio.NewReader(waiting)
	if _, err := wbr.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a client beyond the reserve was served (%v)", err)
	}
	held[0].Close()
	waiting.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(wbr, nil)
	if err != nil {
		t.Fatalf("the waiting client after a slot freed: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
}

// Issue 21 D2: 130 sockets, each sending one public GET /healthz and then
// idling in keep-alive, blocked every client, token holders included (an
// authenticated /metrics timed out after 20 s). With the default limits
// the token holder is served, and so is a new anonymous client once the
// idle ones are closed.
func TestServerAnonymousClientsDoNotStarveTokenHolders(t *testing.T) {
	const token = "0123456789abcdef-starve"
	_, srv, base := startServer(t, HubConfig{}, ServerConfig{Token: token}, Routes{})
	var answered sync.WaitGroup
	for range 130 {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		answered.Add(1)
		go func() {
			defer answered.Done()
			// the answer (200, or 503 beyond the per-address limit) is
			// read; the connection stays open
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	answered.Wait()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest("GET", base+"/streams", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("the token holder: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("the token holder: %d", res.StatusCode)
	}
	// The idle keep-alives are closed after a second near the limit, so
	// an anonymous client gets in again.
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := client.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anonymous client served again: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// At MaxConns a new connection closes the longest idle keep-alive one to
// make its room, instead of waiting for the idle timeout.
func TestServerEvictsIdleConnectionsAtTheLimit(t *testing.T) {
	_, srv, _ := startServer(t, HubConfig{}, ServerConfig{MaxConns: 3, MaxConnsPerIP: -1}, Routes{})
	var conns []net.Conn
	var readers []*bufio.Reader
	for range 3 {
		c, err := net.Dial("tcp", srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if res, err := rawGet(t, c, br, "/healthz", ""); err != nil || res.StatusCode != 200 {
			t.Fatalf("%v %v", res, err)
		}
		conns, readers = append(conns, c), append(readers, br)
		waitIdle(t, srv, len(conns)) // in order: the first is the longest idle
	}
	c, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res, err := rawGet(t, c, bufio.NewReader(c), "/healthz", ""); err != nil || res.StatusCode != 200 {
		t.Fatalf("new client at the limit: %v %v", res, err)
	}
	conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := readers[0].ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("the longest idle connection: %v, want it closed", err)
	}
	conns[2].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := readers[2].ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the newest idle connection: %v, want it kept", err)
	}
}

func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeSelfSigned(t, certFile, keyFile)
	_, srv, base := startServer(t, HubConfig{}, ServerConfig{TLSCert: certFile, TLSKey: keyFile, Token: "t"}, Routes{})
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("URL %s", srv.URL())
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	req, _ := http.NewRequest("GET", base+"/streams", nil)
	req.Header.Set("Authorization", "Bearer t")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Fatalf("HTTPS: %d, TLS %v", res.StatusCode, res.TLS != nil)
	}
	client.CloseIdleConnections()
	if _, err := NewServer(ServerConfig{TLSCert: keyFile, TLSKey: certFile}, Routes{}); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("swapped TLS files: %v", err)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and localhost and
// returns a pool that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "htcstream test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// Close before Start, twice, and Start after Close.
func TestServerCloseOrders(t *testing.T) {
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Logger: quietLogger()}, Routes{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	srv, _ = NewServer(ServerConfig{Addr: "127.0.0.1:0", Logger: quietLogger()}, Routes{})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err == nil {
		t.Fatal("second Start accepted")
	}
	addr := srv.Addr()
	srv.Close()
	srv.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("still listening after Close")
	}
	if got := (&Server{cfg: ServerConfig{Addr: ":8080"}}).URL(); got != "http://127.0.0.1:8080/" {
		t.Errorf("URL of a server on every interface: %s", got)
	}
}

// TestServerServesEventSnapshots: an event's snapshot_url answers with the
// JPEG behind the token; names that could leave the folder do not.
func TestServerServesEventSnapshots(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "gate"), 0o755); err != nil {
		t.Fatal(err)
	}
	jpg := []byte("\xff\xd8\xff\xe0 a jpeg")
	if err := os.WriteFile(filepath.Join(dir, "gate", "gate-1-7.jpg"), jpg, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "secret.txt"), []byte("no"), 0o644)
	_, _, base := startServer(t, HubConfig{}, ServerConfig{Token: "tok"}, Routes{SnapshotDir: dir})
	if code, _, _ := do(t, "GET", base+"/snapshots/gate/gate-1-7.jpg", ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	code, hdr, body := do(t, "GET", base+"/snapshots/gate/gate-1-7.jpg", "", "Authorization", "Bearer tok")
	if code != http.StatusOK || body != string(jpg) || hdr.Get("Content-Type") != "image/jpeg" {
		t.Errorf("snapshot: %d %q %q", code, hdr.Get("Content-Type"), body)
	}
	for _, p := range []string{"/snapshots/gate/..%2Fsecret.txt", "/snapshots/../secret.txt", "/snapshots/gate/secret.txt", "/snapshots/.x/a.jpg"} {
		if code, _, body := do(t, "GET", base+p, "", "Authorization", "Bearer tok"); code == http.StatusOK || strings.Contains(body, "no") && len(body) == 2 {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
}

// Issue 21 D9: a blank token started a server no request could open
// (incoming tokens are trimmed), and a one-letter token served 0.0.0.0
// without a word.
func TestServerRefusesBlankTokensAndWarnsOfWeakOnes(t *testing.T) {
	for _, tok := range []string{" ", "\t", "two words", "tab\tin"} {
		if _, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Token: tok}, Routes{}); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("token %q: %v, want a refusal", tok, err)
		}
	}
	logged := func(addr, tok string) string {
		var buf bytes.Buffer
		srv, err := NewServer(ServerConfig{Addr: addr, Token: tok, Logger: slog.New(slog.NewTextHandler(&buf, nil))}, Routes{})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		return buf.String()
	}
	if out := logged("0.0.0.0:0", "a"); !strings.Contains(out, "WEAK TOKEN: 1 characters") {
		t.Errorf("token \"a\" on 0.0.0.0: no warning in\n%s", out)
	}
	if out := logged("0.0.0.0:0", "0123456789abcdef"); strings.Contains(out, "WEAK TOKEN") {
		t.Errorf("a 16-character token was called weak:\n%s", out)
	}
	if out := logged("127.0.0.1:0", "a"); strings.Contains(out, "WEAK TOKEN") {
		t.Errorf("a short token on loopback was warned of:\n%s", out)
	}
}
