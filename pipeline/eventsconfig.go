package pipeline

import (
	"fmt"
	"sort"
	"time"

	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/track"
)

// EventsConfig is the events: section: tracking, the events tracks turn
// into, and their snapshots (docs/events.md). A camera overrides the
// EventRules part in cameras.NAME.events; snapshots are one store for the
// run.
type EventsConfig struct {
	EventRules `yaml:",inline"`
	// Snapshots: where and how the best frame of each track is kept.
	Snapshots SnapshotsConfig `yaml:"snapshots"`
	// Store: the database every event is kept in (docs/event-store.md).
	Store StoreConfig `yaml:"store"`
}

// StoreConfig is events.store: the event store (store.Store), fed by an
// event output of its own and read by /api/events and /api/recordings.
type StoreConfig struct {
	// Driver: sqlite (one file, default) or postgres (a server several
	// workers share).
	Driver string `yaml:"driver"`
	// Path is the SQLite file; empty (and no dsn): no store. Default "".
	Path string `yaml:"path"`
	// DSN is PostgreSQL's: postgres://user:${PGPASSWORD}@host:5432/db.
	DSN string `yaml:"dsn"`
	// RetainDays: events last seen longer ago are deleted (hourly); 0
	// keeps them all. Default 30.
	RetainDays int `yaml:"retain_days"`
	// Worker names this process in the store's rows; empty =
	// mqtt.client_id, else htcstream-<hostname>.
	Worker string `yaml:"worker"`
	// Queue: events waiting for the database; the oldest are dropped
	// beyond it. Default 1000.
	Queue int `yaml:"queue"`
}

// enabled says whether the run keeps a store.
func (s StoreConfig) enabled() bool { return s.Path != "" || s.DSN != "" }

// EventRules are a camera's tracking and event settings.
type EventRules struct {
	// Enabled tracks the camera's instances (track_id in every output)
	// and makes events of the tracks. Default false.
	Enabled bool `yaml:"enabled"`
	// Tracker: the tracker's thresholds (track.Settings; defaults
	// track.DefaultSettings). The camera's model runs at a score
	// threshold of at most tracker.low_score, so the tracker sees the
	// low-scoring detections it needs; the camera's own score_threshold
	// and thresholds still decide what is drawn and written.
	Tracker track.Settings `yaml:"tracker"`
	// UpdateInterval: an update event about a better score is sent at
	// most this often per track (zone changes go at once). Default 5s.
	UpdateInterval time.Duration `yaml:"update_interval"`
	// Labels: only tracks of these labels make events (empty: all).
	Labels []string `yaml:"labels"`
	// Zones: only tracks that entered one of these zones make events
	// (empty: all); new is sent when the track first enters one.
	Zones []string `yaml:"zones"`
	// MinDuration: only tracks seen this long make events; new is sent
	// once they have been. Default 0.
	MinDuration time.Duration `yaml:"min_duration"`
	// KeepSnapshots: keep this camera's best frames (when
	// events.snapshots.dir is set). Default true.
	KeepSnapshots bool `yaml:"keep_snapshots"`
}

// SnapshotsConfig configures the snapshot store (record.SnapshotStore).
type SnapshotsConfig struct {
	// Dir holds <camera>/<event id>.jpg; empty: no snapshots. Default "".
	Dir string `yaml:"dir"`
	// Frame: annotated (as drawn) or clean (as decoded; costs a copy of
	// the frame whenever a track's score improves). Default annotated.
	Frame string `yaml:"frame"`
	// MaxCount, MaxAge, MaxBytes: retention over all cameras, oldest
	// first; -1 turns a limit off. Defaults 1000, 168h, 1 GiB.
	MaxCount int           `yaml:"max_count"`
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
	// Quality is the JPEG quality, 1-100. Default 85.
	Quality int `yaml:"quality"`
}

// MQTTConfig is the mqtt: section (events.MQTTConfig); empty broker: no
// MQTT.
type MQTTConfig struct {
	// Broker: tcp://host:1883, ssl://host:8883, ws://, wss://.
	Broker string `yaml:"broker"`
	// ClientID: empty = htcstream-<hostname>; unique per worker.
	ClientID    string `yaml:"client_id"`
	TopicPrefix string `yaml:"topic_prefix"`
	QoS         int    `yaml:"qos"`
	// Username and Password: write ${MQTT_USER}, ${MQTT_PASSWORD}.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CAFile, CertFile, KeyFile: PEM files for TLS (ssl:// brokers).
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Outbox: events kept while the broker is away; the oldest are
	// dropped (and counted) beyond it.
	Outbox int `yaml:"outbox"`
	// MinBackoff, MaxBackoff: the wait between connection attempts.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// HomeAssistant publishes MQTT discovery: a count sensor per camera
	// and label.
	HomeAssistant   bool   `yaml:"home_assistant"`
	DiscoveryPrefix string `yaml:"discovery_prefix"`
}

// WebhookConfig is one entry of the webhooks: list (events.WebhookConfig).
type WebhookConfig struct {
	URL string `yaml:"url"`
	// Headers: e.g. {Authorization: "Bearer ${HOOK_TOKEN}"}.
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds one attempt. 0: 5s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAttempts per event. 0: 5.
	MaxAttempts int `yaml:"max_attempts"`
	// Queue: events waiting; the oldest are dropped beyond it. 0: 1000.
	Queue int `yaml:"queue"`
}

// Zone is a named polygon of a camera (events.Zone: relative coordinates;
// a track is in it by its box's bottom centre or, with zone_overlap, by
// the share of its mask inside).
type Zone = events.Zone

// defaultEvents is the events: section's defaults.
func defaultEvents() EventsConfig {
	return EventsConfig{
		EventRules: EventRules{Tracker: track.DefaultSettings(), UpdateInterval: 5 * time.Second, KeepSnapshots: true},
		Snapshots: SnapshotsConfig{Frame: "annotated", MaxCount: 1000, MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30,
			Quality: 85},
		Store: StoreConfig{Driver: "sqlite", RetainDays: 30, Queue: 1000},
	}
}

func defaultMQTT() MQTTConfig {
	return MQTTConfig{TopicPrefix: "htcstream", Outbox: 1000, MinBackoff: time.Second, MaxBackoff: 30 * time.Second,
		DiscoveryPrefix: "homeassistant"}
}

// validateEvents reports the events, mqtt and webhooks sections' bad
// values through bad.
func (c RunConfig) validateEvents(bad func(string, ...any)) {
	s := c.Events.Snapshots
	switch s.Frame {
	case "annotated", "clean":
	default:
		bad("events.snapshots.frame %q: want annotated or clean", s.Frame)
	}
	if s.Quality < 1 || s.Quality > 100 {
		bad("events.snapshots.quality %d: want 1-100", s.Quality)
	}
	if s.MaxCount == 0 || s.MaxAge == 0 || s.MaxBytes == 0 {
		bad("events.snapshots: max_count, max_age and max_bytes must be positive (-1 turns a limit off), got %d, %v, %d",
			s.MaxCount, s.MaxAge, s.MaxBytes)
	}
	checkRules(bad, "events.", c.Events.EventRules, nil, false)
	switch st := c.Events.Store; {
	case st.Driver != "sqlite" && st.Driver != "postgres":
		bad("events.store.driver %q: want sqlite or postgres", st.Driver)
	case st.Driver == "sqlite" && st.DSN != "":
		bad("events.store: a dsn is for driver: postgres; sqlite takes a path")
	case st.Driver == "postgres" && st.Path != "":
		bad("events.store: a path is for driver: sqlite; postgres takes a dsn")
	case st.Driver == "postgres" && st.DSN == "":
		bad("events.store: driver postgres needs a dsn (postgres://user:password@host:5432/db)")
	}
	if st := c.Events.Store; st.RetainDays < 0 || st.Queue < 1 {
		bad("events.store: retain_days %d (0 keeps everything), queue %d (at least 1): want positive numbers", st.RetainDays, st.Queue)
	}
	m := c.MQTT
	if m.Broker != "" {
		sc := c.streamMQTT()
		if err := sc.Validate(); err != nil {
			bad("%v", err)
		}
		if m.QoS < 0 || m.QoS > 2 {
			bad("mqtt.qos %d: want 0, 1 or 2", m.QoS)
		}
		if m.Outbox < 1 {
			bad("mqtt.outbox %d: want at least 1", m.Outbox)
		}
		if m.MinBackoff <= 0 || m.MaxBackoff < m.MinBackoff {
			bad("mqtt.min_backoff %v, max_backoff %v: want 0 < min <= max", m.MinBackoff, m.MaxBackoff)
		}
	}
	for i, w := range c.Webhooks {
		sc := events.WebhookConfig{URL: w.URL, MaxAttempts: w.MaxAttempts, Queue: w.Queue}
		if err := sc.Validate(); err != nil {
			bad("webhooks[%d]: %v", i, err)
		}
		if w.Timeout < 0 || w.MaxAttempts < 0 || w.Queue < 0 {
			bad("webhooks[%d]: timeout %v, max_attempts %d, queue %d: want positive values (0: the default)", i, w.Timeout, w.MaxAttempts, w.Queue)
		}
	}
}

// checkRules checks event rules and a camera's zones.
func checkRules(bad func(string, ...any), prefix string, r EventRules, zones map[string]Zone, camera bool) {
	if err := r.Tracker.Validate(); err != nil {
		bad("%stracker: %v", prefix, err)
	}
	if r.UpdateInterval <= 0 {
		bad("%supdate_interval %v: want a positive duration", prefix, r.UpdateInterval)
	}
	if r.MinDuration < 0 {
		bad("%smin_duration %v is negative", prefix, r.MinDuration)
	}
	if camera && r.Enabled {
		for _, z := range r.Zones {
			if _, ok := zones[z]; !ok {
				bad("%szones: %q is not one of the camera's zones (%s)", prefix, z, zoneNames(zones))
			}
		}
	}
}

func checkZones(bad func(string, ...any), prefix string, zones map[string]Zone) {
	for _, name := range sortedKeys(zones) {
		z := zones[name]
		if !validCameraName.MatchString(name) {
			bad("%s%s: a zone name is letters, digits, _ and -", prefix, name)
		}
		if len(z) < 3 {
			bad("%s%s: %d points: a zone needs at least 3 [x, y] points", prefix, name, len(z))
		}
		for _, p := range z {
			if !(p[0] >= 0 && p[0] <= 1 && p[1] >= 0 && p[1] <= 1) {
				bad("%s%s: point [%v, %v] is outside the frame: zone points are relative, 0..1 (x from the left, y from the top)",
					prefix, name, p[0], p[1])
				break
			}
		}
	}
}

func zoneNames(zones map[string]Zone) string {
	if len(zones) == 0 {
		return "it has none"
	}
	return fmt.Sprint(sortedKeys(zones))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// streamMQTT is the MQTT sink's configuration.
func (c RunConfig) streamMQTT() events.MQTTConfig {
	m := c.MQTT
	return events.MQTTConfig{Broker: m.Broker, ClientID: m.ClientID, TopicPrefix: m.TopicPrefix, QoS: byte(max(0, min(m.QoS, 255))),
		Username: m.Username, Password: m.Password, CAFile: m.CAFile, CertFile: m.CertFile, KeyFile: m.KeyFile,
		Outbox: m.Outbox, MinBackoff: m.MinBackoff, MaxBackoff: m.MaxBackoff,
		HomeAssistant: m.HomeAssistant, DiscoveryPrefix: m.DiscoveryPrefix}
}
