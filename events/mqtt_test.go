package events

import (
	"github.com/htcstream/htcstream/internal/mqtttest"
	"github.com/htcstream/htcstream/internal/poll"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quickMQTT is a config that retries fast, for tests.
func quickMQTT(url, id string) MQTTConfig {
	return MQTTConfig{
		Broker: url, ClientID: id, QoS: 1,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testWriter{}, nil)),
	}
}

// testWriter discards logs; tests that read them use a mqtttest.SyncBuffer.
type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) { return len(p), nil }

func decodeEvent(t *testing.T, payload []byte) Event {
	t.Helper()
	var e Event
	if err := json.Unmarshal(payload, &e); err != nil {
		t.Fatalf("event %s: %v", payload, err)
	}
	return e
}

// Events reach a subscriber in order on the camera's topic; the counts of
// current tracks per label are retained; availability and Home Assistant
// discovery are retained; Close says offline.
func TestMQTTEventsCountsDiscovery(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	sub := mqtttest.Subscribe(t, b, "sub", "#", "", "")
	cfg := quickMQTT(b.URL(), "worker-1")
	cfg.HomeAssistant = true
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Announce("front", "person", "car")
	if got := sub.Next(t, "htcstream/worker-1/availability"); string(got.Payload()) != "online" {
		t.Fatalf("availability %q", got.Payload())
	}

	seq := []struct {
		typ   EventType
		track int64
		label string
	}{
		{EventNew, 1, "person"}, {EventNew, 2, "person"}, {EventNew, 3, "car"},
		{EventUpdate, 1, "person"}, {EventEnd, 2, "person"},
	}
	for _, e := range seq {
		if err := s.Publish(testEvent(t, e.typ, "front", e.track, e.label)); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range seq {
		m := sub.Next(t, "htcstream/front/events")
		e := decodeEvent(t, m.Payload())
		if e.Type != want.typ || e.TrackID != want.track || e.Label != want.label || e.Camera != "front" {
			t.Fatalf("event %d: got %s #%d %s on %s, want %s #%d %s", i, e.Type, e.TrackID, e.Label, e.Camera, want.typ, want.track, want.label)
		}
		if m.Retained() {
			t.Errorf("event %d is retained", i)
		}
	}
	poll.Until(t, "all published", 10*time.Second, func() bool { st := s.Stats(); return st.Published == 5 && st.Queued == 0 })
	poll.Until(t, "counts", 10*time.Second, func() bool {
		return mqtttest.Retained(t, b, "htcstream/front/person") == "1" && mqtttest.Retained(t, b, "htcstream/front/car") == "1"
	})
	if got := mqtttest.Retained(t, b, "htcstream/worker-1/availability"); got != "online" {
		t.Errorf("retained availability %q", got)
	}
	var disco map[string]any
	if err := json.Unmarshal([]byte(mqtttest.Retained(t, b, "homeassistant/sensor/worker-1/front_person_count/config")), &disco); err != nil {
		t.Fatal(err)
	}
	if disco["state_topic"] != "htcstream/front/person" || disco["availability_topic"] != "htcstream/worker-1/availability" {
		t.Errorf("discovery config %v", disco)
	}
	st := s.Stats()
	if st.Published != 5 || st.Dropped != 0 || st.Errors != 0 || !st.Connected {
		t.Errorf("stats %+v", st)
	}

	s.Close()
	if got := mqtttest.Retained(t, b, "htcstream/worker-1/availability"); got != "offline" {
		t.Errorf("availability after Close %q, want offline", got)
	}
	if err := s.Publish(testEvent(t, EventNew, "front", 9, "dog")); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	s.Close() // idempotent
}

// The broker is killed mid-stream and restarted on the same port: the sink
// reconnects, sends what fit in the outbox in order, counts the rest as
// dropped, and republishes the counts the restarted broker forgot.
func TestMQTTBrokerRestart(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	p := mqtttest.StartProxy(t, b.Addr())
	cfg := quickMQTT(p.URL(), "restart")
	cfg.Outbox = 4
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sub := mqtttest.Subscribe(t, b, "sub1", "htcstream/cam/#", "", "")
	for i := int64(1); i <= 3; i++ {
		s.Publish(testEvent(t, EventNew, "cam", i, "person"))
	}
	for i := int64(1); i <= 3; i++ {
		if e := decodeEvent(t, sub.Next(t, "htcstream/cam/events").Payload()); e.TrackID != i {
			t.Fatalf("before the kill: got track %d, want %d", e.TrackID, i)
		}
	}
	poll.Until(t, "3 published", 10*time.Second, func() bool { return s.Stats().Published == 3 })

	b.Stop(syscall.SIGKILL)
	poll.Until(t, "the sink to see the broker gone", 10*time.Second, func() bool { return !s.Stats().Connected })
	p.Refuse(true) // hold the sink off until the new subscriber is ready
	for i := int64(4); i <= 10; i++ {
		s.Publish(testEvent(t, EventNew, "cam", i, "person"))
	}
	if st := s.Stats(); st.Queued != 4 || st.Dropped != 3 {
		t.Fatalf("while away: queued %d dropped %d, want 4 and 3", st.Queued, st.Dropped)
	}

	b.Start()
	sub = mqtttest.Subscribe(t, b, "sub2", "htcstream/cam/#", "", "")
	p.Refuse(false)
	for i := int64(7); i <= 10; i++ {
		if e := decodeEvent(t, sub.Next(t, "htcstream/cam/events").Payload()); e.TrackID != i {
			t.Fatalf("after the restart: got track %d, want %d", e.TrackID, i)
		}
	}
	poll.Until(t, "7 published", 10*time.Second, func() bool { return s.Stats().Published == 7 })
	if got := mqtttest.Retained(t, b, "htcstream/cam/person"); got != "10" {
		t.Errorf("count after restart %q, want 10", got)
	}
	st := s.Stats()
	if st.Dropped != 3 || st.Errors == 0 || !st.Connected || st.Queued != 0 {
		t.Errorf("stats %+v: want 3 dropped, some errors, connected, none queued", st)
	}
}

// Wrong credentials: one clear error line, the sink keeps retrying and
// never crashes; the right ones connect.
func TestMQTTWrongCredentials(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "cam", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (Debian's mosquitto): %v: %s", err, out)
	}
	b := mqtttest.StartBroker(t, "allow_anonymous false\npassword_file "+pw+"\n")

	logs := &mqtttest.SyncBuffer{}
	cfg := quickMQTT(b.URL(), "wrong")
	cfg.Username, cfg.Password = "cam", "nope"
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Publish(testEvent(t, EventNew, "cam", 1, "person"))
	poll.Until(t, "three refused attempts", 10*time.Second, func() bool { return s.Stats().Errors >= 3 })
	st := s.Stats()
	if st.Connected || st.Queued != 1 || !strings.Contains(st.LastError, "check the username and password") {
		t.Errorf("stats %+v", st)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d error lines, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "nope") {
		t.Error("the log shows the password")
	}
	s.Close()
	if st := s.Stats(); st.Dropped != 1 {
		t.Errorf("dropped %d after Close, want the 1 queued", st.Dropped)
	}

	cfg.Password = "s3cret"
	cfg.ClientID = "right"
	good, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.Publish(testEvent(t, EventNew, "cam", 1, "person"))
	poll.Until(t, "the right credentials to publish", 10*time.Second, func() bool { return good.Stats().Published == 1 })
}

// A connection that dies without DISCONNECT (here cut by the proxy) makes
// the broker publish the last will: availability goes offline; the sink
// reconnects and says online again.
func TestMQTTLastWill(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	p := mqtttest.StartProxy(t, b.Addr())
	sub := mqtttest.Subscribe(t, b, "sub", "htcstream/+/availability", "", "")
	s, err := NewMQTTSink(quickMQTT(p.URL(), "lwt"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := func(v string) {
		t.Helper()
		if got := string(sub.Next(t, "htcstream/lwt/availability").Payload()); got != v {
			t.Fatalf("availability %q, want %q", got, v)
		}
	}
	want("online")
	p.Cut()
	want("offline")
	want("online")
	if st := s.Stats(); st.Errors == 0 {
		t.Errorf("the lost connection was not counted: %+v", st)
	}
}

func TestMQTTConfigErrors(t *testing.T) {
	for name, cfg := range map[string]MQTTConfig{
		"no broker":   {},
		"scheme":      {Broker: "http://x"},
		"qos":         {Broker: "tcp://127.0.0.1:1", QoS: 3},
		"cert no key": {Broker: "ssl://127.0.0.1:1", CertFile: "c.pem"},
		"ca missing":  {Broker: "ssl://127.0.0.1:1", CAFile: filepath.Join(t.TempDir(), "none.pem")},
		"wildcard":    {Broker: "tcp://127.0.0.1:1", TopicPrefix: "a/#"},
	} {
		if s, err := NewMQTTSink(cfg); err == nil {
			s.Close()
			t.Errorf("%s: no error", name)
		}
	}
}

// A broker that is never there: Publish still returns at once, Close
// returns promptly and counts what was queued as dropped.
func TestMQTTNoBroker(t *testing.T) {
	cfg := quickMQTT("tcp://127.0.0.1:"+strconv.Itoa(mqtttest.FreePort(t)), "alone")
	cfg.Outbox = 2
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s.Publish(testEvent(t, EventNew, "c", int64(i), "cat"))
	}
	poll.Until(t, "a failed attempt", 10*time.Second, func() bool { return s.Stats().Errors > 0 })
	s.Close()
	if st := s.Stats(); st.Dropped != 5 || st.Published != 0 {
		t.Errorf("stats %+v, want all 5 dropped", st)
	}
	if err := s.Publish(Event{Type: "x"}); !errors.Is(err, ErrBadEvent) {
		t.Errorf("bad event: %v", err)
	}
}

// writeTLSFiles makes a CA, a broker certificate for 127.0.0.1 and a
// client certificate, as PEM files in dir.
func writeTLSFiles(t *testing.T, dir string) (ca, cert, key, clientCert, clientKey string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "htcstream test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, k *ecdsa.PrivateKey) []byte {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	srvKey, cliKey := newKey(), newKey()
	ca = write("ca.pem", "CERTIFICATE", caDER)
	cert = write("broker.pem", "CERTIFICATE", leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, srvKey))
	key = writeKey("broker.key", srvKey)
	clientCert = write("client.pem", "CERTIFICATE", leaf(3, "worker", x509.ExtKeyUsageClientAuth, cliKey))
	clientKey = writeKey("client.key", cliKey)
	return
}

// TLS: the sink checks the broker against the configured CA and shows its
// client certificate; a sink that trusts another CA is refused, counted,
// and keeps retrying.
func TestMQTTTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, clientCert, clientKey := writeTLSFiles(t, dir)
	b := mqtttest.StartBroker(t, "allow_anonymous true\ncafile "+ca+"\ncertfile "+cert+"\nkeyfile "+key+"\nrequire_certificate true\n")
	url := "ssl://" + b.Addr()

	cfg := quickMQTT(url, "tls")
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = ca, clientCert, clientKey
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Publish(testEvent(t, EventNew, "cam", 1, "person"))
	poll.Until(t, "a publish over TLS", 10*time.Second, func() bool { return s.Stats().Published == 1 })

	other := t.TempDir()
	otherCA, _, _, _, _ := writeTLSFiles(t, other)
	cfg = quickMQTT(url, "tls-wrong-ca")
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = otherCA, clientCert, clientKey
	bad, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	poll.Until(t, "refused attempts", 10*time.Second, func() bool { return bad.Stats().Errors >= 2 })
	if st := bad.Stats(); st.Connected || !strings.Contains(st.LastError, "certificate") {
		t.Errorf("stats %+v, want a certificate error", st)
	}
}

// Issue 21 D4: a broker that accepts TCP and never answers CONNECT held
// Close for the whole connect timeout (8 s seen; a second Ctrl-C did not
// help). Close cuts the attempt short; the queued event counts as dropped.
func TestMQTTCloseDuringASilentConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	cfg := quickMQTT("tcp://"+ln.Addr().String(), "silent")
	cfg.ConnectTimeout = time.Minute
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Publish(testEvent(t, EventNew, "c", 1, "cat"))
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the sink never connected")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second): // far below the minute of ConnectTimeout
		t.Fatal("Close waited for the silent broker's connect timeout")
	}
	if st := s.Stats(); st.Dropped != 1 || st.Connected {
		t.Errorf("stats %+v, want the event dropped", st)
	}
}

// Issue 21: the first connection after a failed start was logged as
// "connected again"; "again" is for a connection that was up before.
func TestMQTTFirstConnectionIsNotCalledAgain(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	b.Stop(syscall.SIGTERM) // away when the run starts
	logs := &mqtttest.SyncBuffer{}
	cfg := quickMQTT(b.URL(), "late")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := NewMQTTSink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	poll.Until(t, "a failed attempt", 10*time.Second, func() bool { return s.Stats().Errors > 0 })
	b.Start()
	poll.Until(t, "the first connection", 20*time.Second, func() bool { return s.Stats().Connected })
	if out := logs.String(); strings.Contains(out, "connected again") || !strings.Contains(out, "mqtt: connected") {
		t.Errorf("first connection after a failed start:\n%s", out)
	}
	b.Stop(syscall.SIGKILL)
	poll.Until(t, "the drop", 20*time.Second, func() bool { return !s.Stats().Connected })
	b.Start()
	poll.Until(t, "the reconnection", 20*time.Second, func() bool { return s.Stats().Connected })
	if out := logs.String(); strings.Count(out, "connected again") != 1 {
		t.Errorf("reconnection:\n%s", out)
	}
}
