package pipeline

import (
	"bytes"
	"fmt"
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

// The helpers here run a real mosquitto broker for the events tests (a
// copy of stream's test-only helpers, which another package cannot use):
// started by the test on a free loopback port with a config file it writes
// (never the system's service), killed and restarted on the same port, and
// stopped at the end.

// broker is one mosquitto process the test owns.
type broker struct {
	t    *testing.T
	dir  string
	port int
	conf string
	cmd  *exec.Cmd
	// exited is closed when the running mosquitto has exited.
	exited chan struct{}
	log    *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startBroker starts mosquitto on a free loopback port. extra is appended
// to the config (e.g. a password_file); without it anyone may connect.
func startBroker(t *testing.T, extra string) *broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			t.Fatalf("mosquitto not installed (scripts/setup installs Debian's mosquitto): %v", err)
		}
		bin = "/usr/sbin/mosquitto"
	}
	b := &broker{t: t, dir: t.TempDir(), port: freePort(t), log: &syncBuffer{}}
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
	b.start()
	t.Cleanup(func() {
		b.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.log)
		}
	})
	return b
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (b *broker) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }
func (b *broker) url() string  { return "tcp://" + b.addr() }

// start runs mosquitto (again) on b's port and waits until it listens.
func (b *broker) start() {
	b.t.Helper()
	cmd := exec.Command(b.cmd.Path, b.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = b.log, b.log
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.cmd = cmd
	exited := make(chan struct{})
	b.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			b.t.Fatalf("mosquitto exited at start:\n%s", b.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto does not listen on %s:\n%s", b.addr(), b.log)
		}
	}
}

// stop signals mosquitto and waits for it to exit.
func (b *broker) stop(sig syscall.Signal) {
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

// subscriber is a test's own MQTT client collecting what it receives.
type subscriber struct {
	c    mqtt.Client
	msgs chan mqtt.Message
}

func subscribe(t *testing.T, b *broker, id, filter string, user, pass string) *subscriber {
	t.Helper()
	s := &subscriber{msgs: make(chan mqtt.Message, 1000)}
	o := mqtt.NewClientOptions().AddBroker(b.url()).SetClientID(id).
		SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetCleanSession(true).SetOrderMatters(true)
	s.c = mqtt.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { s.msgs <- m })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

// next returns the next message on topic, skipping others; it fails the
// test after a few seconds.
func (s *subscriber) next(t *testing.T, topic string) mqtt.Message {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			if m.Topic() == topic {
				return m
			}
		case <-timeout:
			t.Fatalf("no message on %s", topic)
			return nil
		}
	}
}

// retained reads the retained value of topic with a fresh client.
func retained(t *testing.T, b *broker, topic string) string {
	t.Helper()
	s := subscribe(t, b, "probe-"+strconv.FormatInt(time.Now().UnixNano(), 36), topic, "", "")
	defer s.c.Disconnect(0)
	m := s.next(t, topic)
	if !m.Retained() {
		t.Fatalf("%s: %q is not retained", topic, m.Payload())
	}
	return string(m.Payload())
}
