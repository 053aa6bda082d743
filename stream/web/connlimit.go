package web

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connLimiter is the server's listener: it bounds the connections and keeps
// anonymous clients from starving those with credentials (issue 21 D2: 130
// sockets, each sending one public GET /healthz and then idling in
// keep-alive, held every slot of a plain limit for the idle timeout, and an
// authenticated /metrics timed out).
//
//   - Up to max connections are ordinary. Once three quarters of them are
//     open, idle keep-alive connections are closed after shortIdle; at max,
//     a new connection closes the longest idle one.
//   - A connection beyond max, or beyond perIP from one address, is
//     restricted: its requests are served only with credentials
//     (Server.protect answers the others 503 and closes it).
//   - Past max plus a reserve, Accept waits, as a plain limit does.
type connLimiter struct {
	net.Listener
	max, perIP int
	idle       time.Duration // the server's own idle timeout
	sem        chan struct{} // max + reserve
	done       chan struct{}
	closeOnce  sync.Once

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
	byIP  map[string]int
}

// shortIdle is how long an idle keep-alive connection is kept once the
// server nears its connection limit: a browser reopens one at no cost.
const shortIdle = time.Second

func newConnLimiter(l net.Listener, maxConns, perIP int, idle time.Duration) *connLimiter {
	reserve := max(16, maxConns/4)
	c := &connLimiter{Listener: l, max: maxConns, perIP: perIP, idle: idle, sem: make(chan struct{}, maxConns+reserve),
		done: make(chan struct{}), conns: map[*trackedConn]struct{}{}, byIP: map[string]int{}}
	go c.reap()
	return c
}

// trackedConn is one accepted connection.
type trackedConn struct {
	net.Conn
	l          *connLimiter
	ip         string
	restricted bool
	idleSince  atomic.Int64 // unix ns since it waits for its next request; 0 while busy or new
	once       sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

func (l *connLimiter) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	nc, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	ip := ""
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ip = a.IP.String()
	}
	c := &trackedConn{Conn: nc, l: l, ip: ip}
	l.mu.Lock()
	// At a limit, the longest idle connection (of this address, for the
	// per-address one) gives its slot to the new one.
	open, fromIP := len(l.conns), l.byIP[ip]
	var evict []*trackedConn
	if open >= l.max {
		if e := l.longestIdleLocked(0, ""); e != nil {
			evict = append(evict, e)
			open--
			if e.ip == ip {
				fromIP--
			}
		}
	}
	if l.perIP > 0 && fromIP >= l.perIP {
		if e := l.longestIdleLocked(0, ip); e != nil && (len(evict) == 0 || e != evict[0]) {
			evict = append(evict, e)
			open--
			fromIP--
		}
	}
	c.restricted = open >= l.max || l.perIP > 0 && fromIP >= l.perIP
	l.conns[c] = struct{}{}
	l.byIP[ip]++
	l.mu.Unlock()
	for _, e := range evict {
		e.Close()
	}
	return c, nil
}

// longestIdleLocked is the connection idle the longest, for at least
// atLeast, from address ip ("": any); nil when none is.
func (l *connLimiter) longestIdleLocked(atLeast time.Duration, ip string) *trackedConn {
	var best *trackedConn
	var since int64
	cutoff := time.Now().Add(-atLeast).UnixNano()
	for c := range l.conns {
		if ip != "" && c.ip != ip {
			continue
		}
		if s := c.idleSince.Load(); s != 0 && s <= cutoff && (best == nil || s < since) {
			best, since = c, s
		}
	}
	return best
}

// open counts the connections open now.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *connLimiter) release(c *trackedConn) {
	l.mu.Lock()
	if _, ok := l.conns[c]; ok {
		delete(l.conns, c)
		if l.byIP[c.ip]--; l.byIP[c.ip] <= 0 {
			delete(l.byIP, c.ip)
		}
		<-l.sem
	}
	l.mu.Unlock()
}

// reap closes idle keep-alive connections after shortIdle while three
// quarters of max or more are open, and those of an address with three
// quarters of perIP or more.
func (l *connLimiter) reap() {
	if l.idle > 0 && l.idle <= shortIdle {
		return // the server's own idle timeout is as short
	}
	t := time.NewTicker(shortIdle / 4)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		var stale []*trackedConn
		l.mu.Lock()
		near := 4*len(l.conns) >= 3*l.max
		cutoff := time.Now().Add(-shortIdle).UnixNano()
		for c := range l.conns {
			if s := c.idleSince.Load(); s != 0 && s <= cutoff && (near || l.perIP > 0 && 4*l.byIP[c.ip] >= 3*l.perIP) {
				stale = append(stale, c)
			}
		}
		l.mu.Unlock()
		for _, c := range stale {
			c.Close()
		}
	}
}

func (l *connLimiter) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// tracked is the limiter's connection under what http.Server hands its
// hooks (a *tls.Conn over it with TLS).
func tracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*trackedConn)
	return t
}

// connState is http.Server.ConnState: it marks when a connection waits
// for its next request.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	t := tracked(c)
	if t == nil {
		return
	}
	if st == http.StateIdle {
		t.idleSince.Store(time.Now().UnixNano())
	} else {
		t.idleSince.Store(0)
	}
}

type connKey struct{}

// connContext is http.Server.ConnContext: requests find their connection.
func (l *connLimiter) connContext(ctx context.Context, c net.Conn) context.Context {
	if t := tracked(c); t != nil {
		return context.WithValue(ctx, connKey{}, t)
	}
	return ctx
}

// restrictedConn says whether r came on a connection beyond the limits,
// which serves requests with credentials only.
func restrictedConn(r *http.Request) bool {
	t, _ := r.Context().Value(connKey{}).(*trackedConn)
	return t != nil && t.restricted
}
