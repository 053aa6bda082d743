// Package mqtttest runs a real mosquitto broker for tests: started by the
// test on a free loopback port with a config file it writes (never the
// system's service), killed and restarted on the same port, stopped at the
// end; plus a subscriber and a TCP proxy that can cut connections. Debian's
// mosquitto is installed by scripts/setup.
package mqtttest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Broker is one mosquitto process the test owns.
type Broker struct {
	t    testing.TB
	dir  string
	port int
	conf string
	cmd  *exec.Cmd
	// exited is closed when the running mosquitto has exited.
	exited chan struct{}
	// Log collects mosquitto's output.
	Log *SyncBuffer
}

// SyncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// StartBroker starts mosquitto on a free loopback port. extra is appended
// to the config (e.g. a password_file); without it anyone may connect.
func StartBroker(t testing.TB, extra string) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			t.Fatalf("mosquitto not installed (scripts/setup installs Debian's mosquitto): %v", err)
		}
		bin = "/usr/sbin/mosquitto"
	}
	b := &Broker{t: t, dir: t.TempDir(), port: FreePort(t), Log: &SyncBuffer{}}
	conf := fmt.Sprintf("listener %d 127.0.0.1\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n", b.port)
	if os.Geteuid() == 0 {
		conf += "user root\n" // stay root: the test's files are root's
	}
	if extra == "" {
		conf += "allow_anonymous true\n"
	}
	conf += extra
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(bin, "-c", b.conf)
	b.Start()
	t.Cleanup(func() {
		b.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.Log)
		}
	})
	return b
}

// FreePort is a loopback TCP port nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// URL is the broker's tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Start runs mosquitto (again) on b's port and waits until it listens.
func (b *Broker) Start() {
	b.t.Helper()
	cmd := exec.Command(b.cmd.Path, b.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = b.Log, b.Log
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.cmd = cmd
	exited := make(chan struct{})
	b.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			b.t.Fatalf("mosquitto exited at start:\n%s", b.Log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto does not listen on %s:\n%s", b.Addr(), b.Log)
		}
	}
}

// Stop signals mosquitto and waits for it to exit.
func (b *Broker) Stop(sig syscall.Signal) {
	if b.exited == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.exited
	}
}

// Subscriber is a test's own MQTT client collecting what it receives.
type Subscriber struct {
	C    mqtt.Client
	Msgs chan mqtt.Message
}

// Subscribe connects a client of the test's own to b and subscribes it to filter.
func Subscribe(t testing.TB, b *Broker, id, filter string, user, pass string) *Subscriber {
	t.Helper()
	s := &Subscriber{Msgs: make(chan mqtt.Message, 1000)}
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).
		SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetCleanSession(true).SetOrderMatters(true)
	s.C = mqtt.NewClient(o)
	if tok := s.C.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.C.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.Msgs <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	t.Cleanup(func() { s.C.Disconnect(0) })
	return s
}

// Next returns the next message on topic, skipping others; it fails the
// test after a few seconds.
func (s *Subscriber) Next(t testing.TB, topic string) mqtt.Message {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-s.Msgs:
			if m.Topic() == topic {
				return m
			}
		case <-timeout:
			t.Fatalf("no message on %s", topic)
			return nil
		}
	}
}

// Retained reads the retained value of topic with a fresh client.
func Retained(t testing.TB, b *Broker, topic string) string {
	t.Helper()
	s := Subscribe(t, b, "probe-"+strconv.FormatInt(time.Now().UnixNano(), 36), topic, "", "")
	defer s.C.Disconnect(0)
	m := s.Next(t, topic)
	if !m.Retained() {
		t.Fatalf("%s: %q is not retained", topic, m.Payload())
	}
	return string(m.Payload())
}

// Proxy forwards TCP connections to a target. The tests put it between
// the sink and the broker to cut the sink's connection without a
// DISCONNECT (as a network failure does) and to hold the sink off the
// broker while the test's subscriber gets ready.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	shut  bool // refuse: accept and close at once
}

// StartProxy forwards a free loopback port to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// URL is the proxy's broker URL.
func (p *Proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		shut := p.shut
		p.mu.Unlock()
		if shut {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close(); c.Close() }()
		go func() { io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// Cut closes every forwarded connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Refuse makes the proxy close new connections at once (true) or forward
// them again (false).
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.shut = on
	p.mu.Unlock()
}
