package web

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ServerConfig configures the web API's HTTP server (see NewServer). Every
// zero field takes the default its comment gives; the zero value serves
// this machine only, without credentials.
type ServerConfig struct {
	// Addr is where the server listens, HOST:PORT. Default
	// "127.0.0.1:8080". A bare port (":8080") means 127.0.0.1 unless Token,
	// Users or Insecure is set; then it means every interface. A host that
	// is not loopback (127.0.0.0/8, ::1, localhost) needs Token or Users,
	// or Insecure.
	Addr string
	// Token is the bearer token ("Authorization: Bearer TOKEN") that opens
	// WHEP, /streams, /metrics, /healthz's details and the snapshots.
	// Default "": no token. A blank token, or one with spaces or control
	// characters, is refused; one shorter than MinTokenLen on an address
	// beyond this machine is served with a warning.
	Token string
	// Users are basic-auth accounts, user name to password; either they or
	// Token open the protected routes. Default none.
	Users map[string]string
	// TLSCert and TLSKey are PEM files; with both the server speaks HTTPS
	// (HTTP/2 included). Default "": plain HTTP. One without the other is
	// an error.
	TLSCert, TLSKey string
	// AllowedOrigins are the other origins ("https://dash.example:8443",
	// scheme://host[:port]) whose pages may call the API from a browser
	// (CORS). Default none: same-origin pages only. "*" is refused.
	AllowedOrigins []string
	// AllowedHosts are the host names (no port) the server answers to
	// besides IP addresses and localhost, against DNS rebinding: the Host
	// header of a request must be one of them. ".example.com" (or
	// "*.example.com") allows every name under example.com; "*" turns the
	// check off (behind a proxy that checks it). Default none.
	AllowedHosts []string
	// Insecure allows a non-loopback Addr without Token or Users: anyone
	// who reaches the port can watch every camera. A warning says so at
	// Start. Default false: such an Addr is refused.
	Insecure bool
	// ReadHeaderTimeout bounds reading a request's headers; default 10 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included; default
	// 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request's handling and response (a WHEP offer
	// waits for ICE gathering, HubConfig.GatherTimeout); default 60 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that waits this long for
	// its next request; default 60 s.
	IdleTimeout time.Duration
	// MaxConns bounds the open connections anonymous clients may hold.
	// Near it, idle keep-alive connections are closed after a second, and
	// at it the longest idle one makes room for a new one. Beyond it a
	// reserve of max(16, MaxConns/4) more connections serves only requests
	// with credentials (when any are configured; the others get 503), so
	// that anonymous clients cannot starve token holders; past the reserve
	// clients wait in the kernel's accept queue. Default 128.
	MaxConns int
	// MaxConnsPerIP: connections from one address beyond this many are
	// served as beyond MaxConns (credentials only). Default 32; negative:
	// no per-address limit (behind a proxy that is not on loopback, all
	// clients share its address).
	MaxConnsPerIP int
	// MaxHeaderBytes bounds a request's headers; default 16 KiB.
	MaxHeaderBytes int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// MinTokenLen is the shortest token served beyond this machine without a
// warning: 16 random characters are out of reach of guessing over HTTP.
const MinTokenLen = 16

// ErrNeedsAuth is returned by NewServer for a non-loopback address
// without Token, Users or Insecure.
var ErrNeedsAuth = errors.New("serving beyond this machine needs a bearer token or basic-auth users (or insecure, to serve anyone who can reach it)")

func (c ServerConfig) withDefaults() (ServerConfig, error) {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ReadHeaderTimeout, 10*time.Second)
	def(&c.ReadTimeout, 30*time.Second)
	def(&c.WriteTimeout, 60*time.Second)
	def(&c.IdleTimeout, 60*time.Second)
	if c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 {
		return c, fmt.Errorf("server: negative timeout (read header %v, read %v, write %v, idle %v)", c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout)
	}
	if c.MaxConns == 0 {
		c.MaxConns = 128
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = 32
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	if c.MaxConns < 0 || c.MaxHeaderBytes < 0 {
		return c, fmt.Errorf("server: negative max conns %d or max header bytes %d", c.MaxConns, c.MaxHeaderBytes)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, fmt.Errorf("server: TLS needs both a certificate and a key (got cert %q, key %q)", c.TLSCert, c.TLSKey)
	}
	if c.Token != "" && strings.TrimSpace(c.Token) == "" {
		// incoming tokens are trimmed: no request could ever match it
		return c, errors.New("server: the token is blank (only spaces): no request could match it; set a real token")
	}
	if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return c, errors.New("server: the token holds spaces or control characters, which an Authorization header cannot carry intact; use letters, digits and punctuation")
	}
	for u, p := range c.Users {
		if u == "" || strings.Contains(u, ":") || p == "" {
			return c, fmt.Errorf("server: basic-auth user %q: the name must be non-empty without ':' and the password non-empty", u)
		}
	}
	for _, o := range c.AllowedOrigins {
		if _, err := normOrigin(o); err != nil {
			return c, fmt.Errorf("server: allowed origin: %w", err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	addr, err := resolveAddr(c.Addr, c.hasAuth() || c.Insecure)
	if err != nil {
		return c, err
	}
	c.Addr = addr
	if !c.hasAuth() && !c.Insecure && !isLoopbackAddr(addr) {
		return c, fmt.Errorf("server: %s: %w", addr, ErrNeedsAuth)
	}
	return c, nil
}

func (c ServerConfig) hasAuth() bool { return c.Token != "" || len(c.Users) > 0 }

// resolveAddr turns a bare port into a loopback address unless open says
// the server may serve every interface.
func resolveAddr(addr string, open bool) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("server: address %q: want HOST:PORT or :PORT (%v)", addr, err)
	}
	if host == "" && !open {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// isLoopbackAddr says whether HOST:PORT listens on this machine only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	return isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Routes are what a Server serves. Every field is optional.
type Routes struct {
	// Hub serves the viewer page (/), GET /streams and WHEP (/whep/...).
	Hub *Hub
	// Metrics serves GET /metrics (e.g. a *pipeline.Metrics).
	Metrics http.Handler
	// Health reports each source for GET /healthz; without it /healthz
	// says only that the server is up.
	Health func() []SourceHealth
	// Snapshot returns a camera's latest annotated frame as JPEG for GET
	// /cameras/{name}/latest.jpg; an error wrapping ErrNoStream or
	// ErrNoFrame answers 404. Default: Hub.LatestJPEG when Hub is set.
	Snapshot func(camera string) ([]byte, error)
	// SnapshotDir, when set, serves the event snapshots a SnapshotStore
	// keeps there at GET /snapshots/{camera}/{file}.jpg (credentials as
	// the other API routes). Default "": not served.
	SnapshotDir string
	// API, when set, serves /api/ (the event store's store.Handler:
	// /api/events, /api/recordings) behind the same credentials.
	API http.Handler
	// Recordings, when set, names the folder of a camera's recording
	// segments (ok false: the camera does not record), served at GET
	// /recordings/{camera}/{file}.mp4 with byte ranges, for seeking.
	Recordings func(camera string) (dir string, ok bool)
	// Clip, when set, returns the file of an event's clip for GET
	// /clips/{camera}/{event id}.mp4; an error wrapping a "not found" kind
	// (any error) answers 404.
	Clip func(camera, file string) (path string, err error)
}

// SourceHealth is one source's entry in GET /healthz.
type SourceHealth struct {
	Name string `json:"name"`
	// State is the source's state (connecting, live, retrying, ended,
	// failed).
	State string `json:"state"`
	// OK says the source does its job; one that is not makes /healthz
	// answer 503.
	OK bool `json:"ok"`
	// Error says what went wrong last, if anything.
	Error string `json:"error,omitempty"`
}

// Server is the web API: the hub's viewer page and WHEP endpoint,
// /streams, /metrics, /healthz and per-camera snapshots, behind the
// protections ServerConfig describes (loopback by default, bearer token
// or basic auth, CORS for configured origins only, Host checking against
// DNS rebinding, timeouts and a connection limit). The routes:
//
//	GET  /                              viewer page (public)
//	GET  /healthz                       200 {"status":"ok"} or 503; per-source details when authorised
//	GET  /streams                       the hub's streams (JSON)
//	POST /whep/{stream}, DELETE /whep/{stream}/{session}   WHEP
//	GET  /metrics                       Prometheus metrics
//	GET  /cameras/{name}/latest.jpg     the latest annotated frame
//
// All but the page and /healthz need the token or a basic-auth user when
// either is configured.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	handler http.Handler
	tls     *tls.Config

	mu      sync.Mutex
	srv     *http.Server
	ln      net.Listener
	done    chan struct{}
	conns   *connLimiter
	started bool
	closed  bool
}

// NewServer checks cfg (a non-loopback address without credentials or
// Insecure is refused with ErrNeedsAuth; TLS files are loaded now) and
// builds a server for routes. It does not listen yet: see Start.
func NewServer(cfg ServerConfig, routes Routes) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("server: TLS certificate %s, key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.handler = s.protect(s.routes(routes))
	return s, nil
}

// Handler is the server's whole handler, protections included, for
// serving it some other way.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes(r Routes) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, req *http.Request) { s.health(w, req, r.Health) })
	if r.Metrics != nil {
		mux.Handle("/metrics", r.Metrics)
	}
	snap := r.Snapshot
	if snap == nil && r.Hub != nil {
		snap = r.Hub.LatestJPEG
	}
	if snap != nil {
		mux.HandleFunc("/cameras/{name}/latest.jpg", func(w http.ResponseWriter, req *http.Request) { serveSnapshot(w, req, snap) })
	}
	if r.SnapshotDir != "" {
		mux.HandleFunc("/snapshots/{camera}/{file}", func(w http.ResponseWriter, req *http.Request) {
			serveSnapshotFile(w, req, r.SnapshotDir)
		})
	}
	if r.API != nil {
		mux.Handle("/api/", r.API)
	}
	if r.Recordings != nil {
		mux.HandleFunc("/recordings/{camera}/{file}", func(w http.ResponseWriter, req *http.Request) {
			serveRecording(w, req, r.Recordings)
		})
	}
	if r.Clip != nil {
		mux.HandleFunc("/clips/{camera}/{file}", func(w http.ResponseWriter, req *http.Request) {
			serveClip(w, req, r.Clip)
		})
	}
	if r.Hub != nil {
		mux.Handle("/", r.Hub)
	}
	return mux
}

// snapshotName is what a SnapshotStore names: no path, no dot files.
var snapshotName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]*$`)

// serveSnapshotFile answers GET /snapshots/{camera}/{file}.jpg from dir;
// names that could reach outside it are not found.
func serveSnapshotFile(w http.ResponseWriter, r *http.Request, dir string) {
	if !readOnly(w, r) {
		return
	}
	cam, file := r.PathValue("camera"), r.PathValue("file")
	if !snapshotName.MatchString(cam) || !snapshotName.MatchString(file) || !strings.HasSuffix(file, ".jpg") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "private, max-age=3600")
	http.ServeFile(w, r, filepath.Join(dir, cam, file))
}

// recordingName is what a recorder names its segments (record.segmentName).
var recordingName = regexp.MustCompile(`^[A-Za-z0-9_-]+-\d{8}T\d{6}\.\d{3}Z\.mp4$`)

// serveRecording answers GET /recordings/{camera}/{file}.mp4 from the
// camera's recording folder; http.ServeFile answers byte ranges, so a
// player seeks without fetching the whole segment.
func serveRecording(w http.ResponseWriter, r *http.Request, dirOf func(string) (string, bool)) {
	if !readOnly(w, r) {
		return
	}
	cam, file := r.PathValue("camera"), r.PathValue("file")
	dir, ok := dirOf(cam)
	if !ok || !snapshotName.MatchString(cam) || !recordingName.MatchString(file) || !strings.HasPrefix(file, cam+"-") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "private, no-cache") // the newest segment grows
	http.ServeFile(w, r, filepath.Join(dir, file))
}

// serveClip answers GET /clips/{camera}/{event id}.mp4.
func serveClip(w http.ResponseWriter, r *http.Request, clip func(string, string) (string, error)) {
	if !readOnly(w, r) {
		return
	}
	cam, file := r.PathValue("camera"), r.PathValue("file")
	if !snapshotName.MatchString(cam) || !snapshotName.MatchString(file) || !strings.HasSuffix(file, ".mp4") {
		http.NotFound(w, r)
		return
	}
	path, err := clip(cam, file)
	if err != nil {
		http.Error(w, fmt.Sprintf("no clip %s for camera %s: %v", file, cam, err), http.StatusNotFound)
		return
	}
	w.Header().Set("Cache-Control", "private, max-age=60")
	http.ServeFile(w, r, path)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request, report func() []SourceHealth) {
	if !readOnly(w, r) {
		return
	}
	var sources []SourceHealth
	if report != nil {
		sources = report()
	}
	out := struct {
		Status  string         `json:"status"`
		Sources []SourceHealth `json:"sources,omitempty"`
	}{Status: "ok"}
	code := http.StatusOK
	for _, src := range sources {
		if !src.OK {
			out.Status, code = "degraded", http.StatusServiceUnavailable
		}
	}
	if s.authorized(r) {
		out.Sources = sources
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(out)
}

func serveSnapshot(w http.ResponseWriter, r *http.Request, snap func(string) ([]byte, error)) {
	if !readOnly(w, r) {
		return
	}
	name := r.PathValue("name")
	b, err := snap(name)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoStream) || errors.Is(err, ErrNoFrame) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// Start listens on cfg.Addr and serves in the background until Close. A
// non-loopback address served without credentials (Insecure) is logged as
// a warning.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("server: start: %w", ErrClosed)
	}
	if s.started {
		return errors.New("server: already started")
	}
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", s.cfg.Addr, err)
	}
	s.startOn(l)
	return nil
}

// startOn serves l; s.mu is held.
func (s *Server) startOn(l net.Listener) {
	s.started = true
	s.ln = l
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		TLSConfig:         s.tls,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.done = make(chan struct{})
	addr := l.Addr().String()
	switch {
	case !isLoopbackAddr(addr) && !s.cfg.hasAuth():
		s.log.Warn("SERVING WITHOUT AUTHENTICATION beyond this machine (insecure): anyone who can reach this port can watch every camera, read /streams and /metrics; set a token or basic-auth users",
			"addr", addr)
	case !isLoopbackAddr(addr) && s.tls == nil:
		s.log.Warn("serving beyond this machine without TLS: the token or password crosses the network in clear text; set a TLS certificate and key or put a TLS proxy in front", "addr", addr)
	}
	if n := len(s.cfg.Token); n > 0 && n < MinTokenLen && !isLoopbackAddr(addr) {
		s.log.Warn(fmt.Sprintf("WEAK TOKEN: %d characters guard a port open beyond this machine; use %d or more (e.g. openssl rand -hex 16)", n, MinTokenLen),
			"addr", addr)
	}
	s.log.Info("web API listening", "url", s.url(addr), "auth", s.cfg.hasAuth(), "tls", s.tls != nil)
	srv, done := s.srv, s.done
	ll := newConnLimiter(l, s.cfg.MaxConns, s.cfg.MaxConnsPerIP, s.cfg.IdleTimeout)
	s.conns = ll
	srv.ConnState = ll.connState
	srv.ConnContext = ll.connContext
	go func() {
		defer close(done)
		var err error
		if s.tls != nil {
			err = srv.ServeTLS(ll, "", "")
		} else {
			err = srv.Serve(ll)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web API stopped", "err", err)
		}
	}()
}

// Addr is the address the server listens on once started (the real port
// for ":0"), else the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// URL is the server's base URL, "http://ADDR/" or "https://ADDR/", with a
// loopback host for a server on every interface.
func (s *Server) URL() string { return s.url(s.Addr()) }

func (s *Server) url(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + addr + "/"
}

// Close stops the server: it stops listening, gives requests in flight
// two seconds, then closes every connection. It is idempotent; close the
// Hub first so WHEP requests waiting on sessions end at once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		srv.Close()
	}
	<-done
	return nil
}
