package events

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// MQTTConfig configures an MQTTSink. Every field but Broker has a default.
type MQTTConfig struct {
	// Broker is the broker's URL: tcp://host:1883, ssl://host:8883 (TLS),
	// ws:// or wss://. Required.
	Broker string
	// ClientID is the MQTT client id; default "htcstream-<hostname>". Two
	// clients with one id throw each other off the broker: give every
	// worker its own.
	ClientID string
	// Instance names this htcstream in the availability topic
	// <TopicPrefix>/<Instance>/availability; default ClientID.
	Instance string
	// TopicPrefix starts every topic; default "htcstream".
	TopicPrefix string
	// QoS of every message (events, counts, availability, discovery):
	// 0, 1 or 2; default 0.
	QoS byte
	// Username and Password, when the broker asks for them; default none.
	// The config supplies them (${ENV}-substituted), never logged.
	Username, Password string
	// CAFile is a PEM file of the CAs that sign the broker's certificate;
	// default the system's roots. CertFile and KeyFile are a PEM client
	// certificate and key, for brokers that ask for one; default none.
	CAFile, CertFile, KeyFile string
	// InsecureSkipVerify accepts any broker certificate (tests only).
	InsecureSkipVerify bool
	// Outbox bounds the events waiting to be sent while the broker is
	// slow or away; when full the oldest is dropped and counted. Default
	// 1000.
	Outbox int
	// KeepAlive is MQTT's keep-alive period; default 30 s. The broker
	// publishes the last will (offline) when it hears nothing for 1.5x
	// this long.
	KeepAlive time.Duration
	// ConnectTimeout bounds one connection attempt; default 10 s.
	ConnectTimeout time.Duration
	// PublishTimeout bounds the wait for one message to be sent (QoS 0)
	// or acknowledged (QoS 1, 2); default 10 s.
	PublishTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection
	// attempts, doubling from the first to the second; default 1 s, 30 s.
	MinBackoff, MaxBackoff time.Duration
	// FlushTimeout bounds how long Close tries to send what is queued;
	// default 2 s.
	FlushTimeout time.Duration
	// HomeAssistant publishes Home Assistant MQTT discovery (retained): a
	// sensor per camera and label counting its current tracks. Default
	// off.
	HomeAssistant bool
	// DiscoveryPrefix is Home Assistant's discovery prefix; default
	// "homeassistant".
	DiscoveryPrefix string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c *MQTTConfig) setDefaults() {
	if c.ClientID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "host"
		}
		c.ClientID = "htcstream-" + host
	}
	if c.Instance == "" {
		c.Instance = c.ClientID
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = "htcstream"
	}
	if c.Outbox == 0 {
		c.Outbox = 1000
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.FlushTimeout == 0 {
		c.FlushTimeout = 2 * time.Second
	}
	if c.DiscoveryPrefix == "" {
		c.DiscoveryPrefix = "homeassistant"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the settings (after defaults) and names what is wrong.
func (c *MQTTConfig) Validate() error {
	switch {
	case c.Broker == "":
		return errors.New("mqtt: no broker URL (e.g. tcp://127.0.0.1:1883)")
	case !hasAnyPrefix(c.Broker, "tcp://", "ssl://", "tls://", "mqtt://", "mqtts://", "ws://", "wss://", "unix://"):
		return fmt.Errorf("mqtt: broker %q: want a tcp://, ssl://, ws:// or wss:// URL", c.Broker)
	case c.QoS > 2:
		return fmt.Errorf("mqtt: QoS %d: want 0, 1 or 2", c.QoS)
	case c.Outbox < 0:
		return fmt.Errorf("mqtt: outbox %d: want a positive size", c.Outbox)
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("mqtt: a client certificate needs both a cert file and a key file")
	case strings.ContainsAny(c.TopicPrefix, "+#"):
		return fmt.Errorf("mqtt: topic prefix %q holds a wildcard (+ or #)", c.TopicPrefix)
	}
	return nil
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// MQTTStats are an MQTTSink's counters, for logs and /metrics.
type MQTTStats struct {
	// Published counts events the broker took (sent at QoS 0,
	// acknowledged at QoS 1 and 2).
	Published uint64
	// Dropped counts events lost: pushed out of a full outbox, or still
	// queued when Close gave up.
	Dropped uint64
	// Errors counts failed connection attempts and failed publishes.
	Errors uint64
	// Connected is whether the sink is connected now.
	Connected bool
	// Queued is the number of events waiting in the outbox.
	Queued int
	// LastError is the latest error, "" after a successful connection.
	LastError string
}

type countKey struct{ camera, label string }

// MQTTSink publishes events to an MQTT broker:
//
//   - <prefix>/<camera>/events: every event's JSON (docs/events.md);
//   - <prefix>/<camera>/<label>: the number of current tracks of that
//     label on that camera, retained;
//   - <prefix>/<instance>/availability: "online" (retained) while
//     connected; the last will makes it "offline" when the connection dies,
//     and Close publishes "offline" itself;
//   - with HomeAssistant, discovery configs under <discovery
//     prefix>/sensor/..., retained.
//
// Publish never blocks: events go to a bounded outbox that one goroutine
// drains in order. The sink connects, and reconnects after any loss, with
// exponential backoff; while the broker is away events queue and the
// oldest are dropped and counted once the outbox is full. Counts are state,
// not events: they are never dropped, and all of them are published again
// after each connection.
type MQTTSink struct {
	cfg    MQTTConfig
	log    *slog.Logger
	tlsCfg *tls.Config
	avail  string

	mu         sync.Mutex
	queue      ring
	closed     bool
	flushBy    time.Time
	tracks     map[countKey]map[int64]struct{}
	dirty      map[countKey]struct{} // counts to publish
	discovered map[countKey]bool     // discovery published on this connection
	lastErr    string

	wake chan struct{} // a Publish or Announce happened
	stop chan struct{} // closed by Close
	done chan struct{} // closed when run returns

	published, dropped, errs atomic.Uint64
	connected                atomic.Bool
	wasConnected             bool // run's goroutine only: a connection was up before
}

// NewMQTTSink checks cfg, loads its TLS files and starts the goroutine
// that connects and publishes; it does not wait for the broker. Bad
// settings or unreadable TLS files are an error here; a broker that is
// away or refuses the credentials is not (the sink logs it and retries).
func NewMQTTSink(cfg MQTTConfig) (*MQTTSink, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &MQTTSink{
		cfg:        cfg,
		log:        cfg.Logger.With("sink", "mqtt", "broker", cfg.Broker),
		avail:      cfg.TopicPrefix + "/" + topicSegment(cfg.Instance) + "/availability",
		queue:      ring{buf: make([]Event, cfg.Outbox)},
		tracks:     map[countKey]map[int64]struct{}{},
		dirty:      map[countKey]struct{}{},
		discovered: map[countKey]bool{},
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.InsecureSkipVerify || hasAnyPrefix(cfg.Broker, "ssl://", "tls://", "mqtts://", "wss://") {
		t, err := loadTLS(cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.InsecureSkipVerify)
		if err != nil {
			return nil, fmt.Errorf("mqtt %s: %w", cfg.Broker, err)
		}
		s.tlsCfg = t
	}
	go s.run()
	return s, nil
}

func loadTLS(caFile, certFile, keyFile string, insecure bool) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", caFile)
		}
		t.RootCAs = pool
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// topicSegment makes s one level of a topic: the level separator and the
// wildcards become '_'.
func topicSegment(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '/', '+', '#', 0:
			return '_'
		}
		return r
	}, s)
}

// EventsTopic is the topic of a camera's events.
func (s *MQTTSink) EventsTopic(camera string) string {
	return s.cfg.TopicPrefix + "/" + topicSegment(camera) + "/events"
}

// CountTopic is the retained topic of a camera's count of a label.
func (s *MQTTSink) CountTopic(camera, label string) string {
	return s.cfg.TopicPrefix + "/" + topicSegment(camera) + "/" + topicSegment(label)
}

// AvailabilityTopic is where "online" and "offline" go.
func (s *MQTTSink) AvailabilityTopic() string { return s.avail }

// Publish queues ev and returns at once. A new or update event counts
// its track as current on its camera and label, an end event no longer.
// After Close it drops ev and returns ErrClosed; an event that cannot be
// marshalled is an error here (wrapping ErrBadEvent), not queued.
func (s *MQTTSink) Publish(ev Event) error {
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("mqtt: %w", ErrClosed)
	}
	k := countKey{ev.Camera, ev.Label}
	set, ok := s.tracks[k]
	if !ok {
		set = map[int64]struct{}{}
		s.tracks[k] = set
		s.dirty[k] = struct{}{}
	}
	n := len(set)
	if ev.Type == EventEnd {
		delete(set, ev.TrackID)
	} else {
		set[ev.TrackID] = struct{}{}
	}
	if len(set) != n {
		s.dirty[k] = struct{}{}
	}
	if s.queue.push(ev) {
		s.dropped.Add(1)
	}
	s.mu.Unlock()
	s.poke()
	return nil
}

// Announce makes the count topics (and, with HomeAssistant, the
// discovery sensors) of a camera's labels exist from the start, at 0 when
// no event came yet. Never blocks.
func (s *MQTTSink) Announce(camera string, labels ...string) {
	s.mu.Lock()
	for _, l := range labels {
		k := countKey{camera, l}
		if _, ok := s.tracks[k]; !ok {
			s.tracks[k] = map[int64]struct{}{}
			s.dirty[k] = struct{}{}
		}
	}
	s.mu.Unlock()
	s.poke()
}

func (s *MQTTSink) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (s *MQTTSink) Stats() MQTTStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return MQTTStats{
		Published: s.published.Load(), Dropped: s.dropped.Load(), Errors: s.errs.Load(),
		Connected: s.connected.Load(), Queued: s.queue.n, LastError: s.lastErr,
	}
}

// Close stops taking events, sends what is queued for at most
// FlushTimeout when connected, publishes "offline" and disconnects.
// Events it could not send are counted as dropped. Close is idempotent
// and safe from any goroutine.
func (s *MQTTSink) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.flushBy = time.Now().Add(s.cfg.FlushTimeout)
		close(s.stop)
	}
	s.mu.Unlock()
	<-s.done
	return nil
}

func (s *MQTTSink) stopping() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

// run connects, serves the connection until it is lost, and again, until
// Close.
func (s *MQTTSink) run() {
	defer close(s.done)
	defer func() {
		s.mu.Lock()
		s.dropped.Add(uint64(s.queue.n))
		s.queue.clear()
		s.mu.Unlock()
	}()
	backoff := s.cfg.MinBackoff
	for !s.stopping() {
		client, lost, err := s.connect()
		if errors.Is(err, errStopped) {
			return
		}
		if err != nil {
			s.fail("connect", err, fmt.Sprintf("retrying in %v", backoff))
			select {
			case <-time.After(backoff):
			case <-s.stop:
				return
			}
			backoff = min(2*backoff, s.cfg.MaxBackoff)
			continue
		}
		backoff = s.cfg.MinBackoff
		if s.serve(client, lost) {
			return
		}
	}
}

// errStopped ends a connection attempt that Close cut short.
var errStopped = errors.New("mqtt: stopped while connecting")

// connect makes one connection attempt with a new client; lost is closed
// when that connection dies.
func (s *MQTTSink) connect() (mqtt.Client, chan struct{}, error) {
	lost := make(chan struct{})
	var once sync.Once
	o := mqtt.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).
		SetPassword(s.cfg.Password).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(s.cfg.KeepAlive).
		SetPingTimeout(min(s.cfg.KeepAlive, 10*time.Second)).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetWriteTimeout(s.cfg.PublishTimeout).
		SetWill(s.avail, "offline", s.cfg.QoS, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			once.Do(func() {
				s.connected.Store(false)
				s.fail("connection lost", err, "reconnecting")
				close(lost)
			})
		})
	if s.tlsCfg != nil {
		o.SetTLSConfig(s.tlsCfg)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	// Close must not wait out a broker that accepts TCP and never answers
	// CONNECT (8 s seen, past the 2 s flush the docs promise): stop cuts
	// the wait short. The attempt goes on in paho's goroutine; whatever it
	// ends in is disconnected then.
	abandon := func() { go func() { tok.Wait(); c.Disconnect(0) }() }
	timer := time.NewTimer(s.cfg.ConnectTimeout + time.Second)
	defer timer.Stop()
	select {
	case <-tok.Done():
	case <-timer.C:
		abandon()
		return nil, nil, fmt.Errorf("no answer in %v", s.cfg.ConnectTimeout)
	case <-s.stop:
		abandon()
		return nil, nil, errStopped
	}
	if err := tok.Error(); err != nil {
		if errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			err = fmt.Errorf("%w (check the username and password)", err)
		}
		return nil, nil, err
	}
	return c, lost, nil
}

// serve publishes on one connection until it is lost (false) or Close
// is done with it (true).
func (s *MQTTSink) serve(c mqtt.Client, lost chan struct{}) (closed bool) {
	s.mu.Lock()
	failed := s.lastErr != ""
	s.lastErr = ""
	for k := range s.tracks {
		s.dirty[k] = struct{}{}
	}
	clear(s.discovered)
	s.mu.Unlock()
	if err := s.send(c, s.avail, []byte("online"), true, time.Time{}); err != nil {
		s.fail("publish availability", err, "reconnecting")
		c.Disconnect(0)
		return false
	}
	s.connected.Store(true)
	// "again" only for a connection that was up before: the first one
	// after a failed start is just "connected" (after failures).
	switch {
	case s.wasConnected:
		s.log.Info("mqtt: connected again", "client_id", s.cfg.ClientID)
	case failed:
		s.log.Info("mqtt: connected (the first attempts failed)", "client_id", s.cfg.ClientID)
	default:
		s.log.Info("mqtt: connected", "client_id", s.cfg.ClientID)
	}
	s.wasConnected = true
	for {
		var deadline time.Time
		stopping := s.stopping()
		if stopping {
			s.mu.Lock()
			deadline = s.flushBy
			s.mu.Unlock()
		}
		if err := s.sendState(c, deadline); err != nil {
			return s.drop(c, "publish count", err)
		}
		s.mu.Lock()
		ev, ok := s.queue.pop()
		s.mu.Unlock()
		if ok {
			payload, err := json.Marshal(ev)
			if err != nil { // Publish validated it: only a bug gets here
				s.fail("marshal event", err, "event dropped")
				s.dropped.Add(1)
				continue
			}
			if err := s.send(c, s.EventsTopic(ev.Camera), payload, false, deadline); err != nil {
				s.mu.Lock()
				if s.queue.pushFront(ev) {
					s.dropped.Add(1)
				}
				s.mu.Unlock()
				return s.drop(c, "publish event", err)
			}
			s.published.Add(1)
			continue
		}
		if stopping {
			s.send(c, s.avail, []byte("offline"), true, deadline)
			s.connected.Store(false)
			c.Disconnect(250)
			return true
		}
		select {
		case <-s.wake:
		case <-s.stop:
		case <-lost:
			return false
		}
	}
}

// drop ends a connection after a failed publish; when Close is waiting it
// gives up (true), else the caller reconnects.
func (s *MQTTSink) drop(c mqtt.Client, what string, err error) bool {
	s.connected.Store(false)
	c.Disconnect(0)
	if s.stopping() {
		return true
	}
	s.fail(what, err, "reconnecting")
	return false
}

// sendState publishes the counts that changed and, with HomeAssistant,
// the discovery configs not yet sent on this connection.
func (s *MQTTSink) sendState(c mqtt.Client, deadline time.Time) error {
	type msg struct {
		k       countKey
		topic   string
		payload []byte
		disco   bool
	}
	var out []msg
	s.mu.Lock()
	for k := range s.dirty {
		if s.cfg.HomeAssistant && !s.discovered[k] {
			topic, payload := s.discovery(k)
			out = append(out, msg{k, topic, payload, true})
		}
		out = append(out, msg{k, s.CountTopic(k.camera, k.label), []byte(strconv.Itoa(len(s.tracks[k]))), false})
	}
	clear(s.dirty)
	s.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].k != out[j].k {
			return out[i].k.camera < out[j].k.camera || out[i].k.camera == out[j].k.camera && out[i].k.label < out[j].k.label
		}
		return out[i].disco && !out[j].disco
	})
	for i, m := range out {
		if err := s.send(c, m.topic, m.payload, true, deadline); err != nil {
			s.mu.Lock()
			for _, m := range out[i:] {
				s.dirty[m.k] = struct{}{}
			}
			s.mu.Unlock()
			return err
		}
		if m.disco {
			s.mu.Lock()
			s.discovered[m.k] = true
			s.mu.Unlock()
		}
	}
	return nil
}

// discovery is the Home Assistant discovery config of a count sensor.
func (s *MQTTSink) discovery(k countKey) (topic string, payload []byte) {
	node := haID(s.cfg.Instance)
	object := haID(k.camera) + "_" + haID(k.label) + "_count"
	cfg := map[string]any{
		"name":                  k.camera + " " + k.label,
		"unique_id":             "htcstream_" + node + "_" + object,
		"object_id":             "htcstream_" + object,
		"state_topic":           s.CountTopic(k.camera, k.label),
		"availability_topic":    s.avail,
		"payload_available":     "online",
		"payload_not_available": "offline",
		"unit_of_measurement":   k.label,
		"state_class":           "measurement",
		"icon":                  "mdi:cctv",
		"device": map[string]any{
			"identifiers":  []string{"htcstream_" + node},
			"name":         "htcstream " + s.cfg.Instance,
			"manufacturer": "htcstream",
			"model":        "Hybrid Task Cascade",
		},
	}
	payload, _ = json.Marshal(cfg)
	return s.cfg.DiscoveryPrefix + "/sensor/" + node + "/" + object + "/config", payload
}

// haID keeps what Home Assistant allows in discovery ids: [a-zA-Z0-9_-].
func haID(s string) string {
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
	if id == "" {
		return "_"
	}
	return id
}

// send publishes one message and waits for it to go (QoS 0) or be
// acknowledged, at most PublishTimeout or until deadline when set.
func (s *MQTTSink) send(c mqtt.Client, topic string, payload []byte, retained bool, deadline time.Time) error {
	wait := s.cfg.PublishTimeout
	if !deadline.IsZero() {
		wait = min(wait, time.Until(deadline))
		if wait <= 0 {
			return errors.New("flush time is up")
		}
	}
	tok := c.Publish(topic, s.cfg.QoS, retained, payload)
	if !tok.WaitTimeout(wait) {
		return fmt.Errorf("publish to %s: no acknowledgement in %v", topic, wait)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// fail counts an error and logs it, once while it repeats: a broker that
// refuses the credentials is one error line, not one every few seconds.
func (s *MQTTSink) fail(what string, err error, next string) {
	s.errs.Add(1)
	msg := what + ": " + err.Error()
	s.mu.Lock()
	repeat := msg == s.lastErr
	s.lastErr = msg
	s.mu.Unlock()
	if repeat {
		s.log.Debug("mqtt: "+msg, "then", next)
		return
	}
	s.log.Error("mqtt: "+msg, "client_id", s.cfg.ClientID, "then", next)
}

// ring is a bounded FIFO of events that drops its oldest when full.
type ring struct {
	buf     []Event
	head, n int
}

// push appends e; when full it drops the oldest first and says so.
func (r *ring) push(e Event) (dropped bool) {
	if len(r.buf) == 0 {
		return true
	}
	if r.n == len(r.buf) {
		r.buf[r.head] = Event{}
		r.head = (r.head + 1) % len(r.buf)
		r.n--
		dropped = true
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
	return dropped
}

// pushFront puts e back at the head (an event whose publish failed); when
// full e itself is dropped, being the oldest.
func (r *ring) pushFront(e Event) (dropped bool) {
	if len(r.buf) == 0 {
		return true
	}
	if r.n == len(r.buf) {
		return true
	}
	r.head = (r.head - 1 + len(r.buf)) % len(r.buf)
	r.buf[r.head] = e
	r.n++
	return false
}

func (r *ring) pop() (Event, bool) {
	if r.n == 0 {
		return Event{}, false
	}
	e := r.buf[r.head]
	r.buf[r.head] = Event{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return e, true
}

func (r *ring) clear() {
	clear(r.buf)
	r.head, r.n = 0, 0
}
