package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// publicPaths are served without credentials: the viewer page, which asks
// for the token itself, and /healthz (its per-source details need them).
var publicPaths = []string{"/", "/index.html", "/viewer.js", "/review.js", "/viewer.css", "/healthz"}

// MediaCookie carries the page's token for what a browser fetches by
// itself, without the page's headers: event snapshots, clips and recordings
// in <img> and <video>. It opens GET and HEAD only, so a request that
// changes something (WHEP) still needs the Authorization header, which
// another site's page cannot send; SameSite=Strict keeps other sites'
// pages from sending the cookie at all.
const MediaCookie = "htcstream_token"

// protect wraps the routes in the server's checks, in this order: the
// Host header (DNS rebinding), CORS (a preflight from an allowed origin is
// answered here, before credentials, as browsers send none with it),
// credentials, then the route.
func (s *Server) protect(next http.Handler) http.Handler {
	origins := map[string]bool{}
	for _, o := range s.cfg.AllowedOrigins {
		n, _ := normOrigin(o) // checked in withDefaults
		origins[n] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !s.hostAllowed(r.Host) {
			http.Error(w, fmt.Sprintf("Host %q is not served here: the server answers to IP addresses, localhost and its allowed hosts (add the name to them)", r.Host), http.StatusMisdirectedRequest)
			return
		}
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		allowed := origin != "" && origins[strings.ToLower(origin)]
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "Location")
		}
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			if !allowed {
				http.Error(w, fmt.Sprintf("origin %s may not call this API (it is not among the allowed origins)", origin), http.StatusForbidden)
				return
			}
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		// A form or script on another site may send a simple request
		// without a preflight; nothing that changes state answers it.
		if origin != "" && !allowed && !sameOrigin(origin, r) && unsafeMethod(r.Method) {
			http.Error(w, fmt.Sprintf("origin %s may not call this API (it is not among the allowed origins)", origin), http.StatusForbidden)
			return
		}
		if restrictedConn(r) && s.cfg.hasAuth() && !s.authorized(r) {
			// beyond the connection limits: the reserve is for credentials
			h.Set("Connection", "close")
			h.Set("Retry-After", "5")
			http.Error(w, "server busy: too many connections (in all, or from your address); requests with credentials are still served", http.StatusServiceUnavailable)
			return
		}
		if !slices.Contains(publicPaths, r.URL.Path) && !s.authorized(r) {
			s.challenge(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// sameOrigin says whether origin is the server itself as the request
// names it.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// normOrigin checks an allowed origin and lower-cases it.
func normOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if o == "*" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("%q is not an origin: want scheme://host[:port], e.g. https://dash.example:8443", o)
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// hostAllowed checks a request's Host header against DNS rebinding: a page
// from a hostile name that resolves to this machine sends that name. IP
// addresses and localhost cannot be rebound; other names must be allowed.
func (s *Server) hostAllowed(hostport string) bool {
	if hostport == "" {
		return true // HTTP/1.0 without Host: not a browser
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		a = strings.TrimSuffix(strings.ToLower(a), ".")
		switch {
		case a == "*" || a == host:
			return true
		case strings.HasPrefix(a, "*."):
			a = a[1:]
			fallthrough
		case strings.HasPrefix(a, "."):
			if strings.HasSuffix(host, a) {
				return true
			}
		}
	}
	return false
}

// authorized says whether r carries the token or a user's password; with
// neither configured everyone is.
func (s *Server) authorized(r *http.Request) bool {
	if !s.cfg.hasAuth() {
		return true
	}
	auth := r.Header.Get("Authorization")
	if s.cfg.Token != "" {
		if scheme, tok, ok := strings.Cut(auth, " "); ok && strings.EqualFold(scheme, "Bearer") && secretEqual(strings.TrimSpace(tok), s.cfg.Token) {
			return true
		}
	}
	if s.cfg.Token != "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		if c, err := r.Cookie(MediaCookie); err == nil && secretEqual(c.Value, s.cfg.Token) {
			return true
		}
	}
	if len(s.cfg.Users) > 0 {
		if user, pass, ok := r.BasicAuth(); ok {
			want, known := s.cfg.Users[user]
			// Compare even for an unknown user, so timing does not tell.
			if secretEqual(pass, want) && known {
				return true
			}
		}
	}
	return false
}

// secretEqual compares in constant time (hashes first, so lengths do not
// show either).
func secretEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func (s *Server) challenge(w http.ResponseWriter) {
	var how []string
	if s.cfg.Token != "" {
		w.Header().Add("WWW-Authenticate", `Bearer realm="htcstream"`)
		how = append(how, "a bearer token (Authorization: Bearer TOKEN)")
	}
	if len(s.cfg.Users) > 0 {
		w.Header().Add("WWW-Authenticate", `Basic realm="htcstream", charset="UTF-8"`)
		how = append(how, "a basic-auth user")
	}
	http.Error(w, "unauthorized: this needs "+strings.Join(how, " or "), http.StatusUnauthorized)
}
