package pipeline

import (
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/internal/mqtttest"

	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests here run the whole `htcstream run` assembly (Execute) with the
// bundled model over the bundled sample video (moving circles, squares,
// triangles, stars and rings), a real mosquitto and loopback webhook
// receivers, a few dozen frames each.

const sampleVideo = "../examples/sample.mp4"

// eventsRun is a run's configuration with events on, snapshots, the
// detections file and the given broker.
func eventsRun(t *testing.T, broker string) (RunConfig, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultRunConfig()
	cfg.Model.Bundle = "../" + DefaultBundleDir
	cfg.Sources = []string{sampleVideo}
	cfg.Outputs.Detections = filepath.Join(dir, "dets.jsonl")
	cfg.Events.Enabled = true
	cfg.Events.UpdateInterval = 200 * time.Millisecond
	cfg.Events.Snapshots.Dir = filepath.Join(dir, "snaps")
	cfg.MQTT.Broker = broker
	cfg.MQTT.ClientID = "worker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg.MQTT.QoS = 1
	cfg.MQTT.MinBackoff, cfg.MQTT.MaxBackoff = 100*time.Millisecond, 200*time.Millisecond
	return cfg, dir
}

// detLine is what the tests read of a detections line.
type detLine struct {
	Seq        int64 `json:"seq"`
	Detections []struct {
		Label   string  `json:"label"`
		Score   float32 `json:"score"`
		TrackID uint64  `json:"track_id"`
	} `json:"detections"`
}

func readDetections(t *testing.T, path string) []detLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []detLine
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var d detLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("detections line %q: %v", l, err)
		}
		out = append(out, d)
	}
	return out
}

// readEvents reads the events on topic from the subscriber until quiet for a
// while.
func readEvents(t *testing.T, s *mqtttest.Subscriber, topic string, quiet time.Duration) []events.Event {
	t.Helper()
	var evs []events.Event
	for {
		select {
		case m := <-s.Msgs:
			if m.Topic() != topic {
				continue
			}
			var ev events.Event
			if err := json.Unmarshal(m.Payload(), &ev); err != nil {
				t.Fatalf("event %s: %v", m.Payload(), err)
			}
			evs = append(evs, ev)
		case <-time.After(quiet):
			return evs
		}
	}
}

// checkLifecycles: every new has one end after it, nothing comes before
// new or after end, and a track's label and event id never change.
func checkLifecycles(t *testing.T, evs []events.Event) (tracks map[int64]string) {
	t.Helper()
	state := map[int64]events.EventType{}
	tracks = map[int64]string{}
	ids := map[int64]string{}
	for _, ev := range evs {
		prev, seen := state[ev.TrackID]
		switch {
		case ev.Type == events.EventNew && seen:
			t.Errorf("track %d: new after %s", ev.TrackID, prev)
		case ev.Type != events.EventNew && (!seen || prev == events.EventEnd):
			t.Errorf("track %d: %s without new, or after end", ev.TrackID, ev.Type)
		}
		if l, ok := tracks[ev.TrackID]; ok && l != ev.Label {
			t.Errorf("track %d: label %s, then %s", ev.TrackID, l, ev.Label)
		}
		if id, ok := ids[ev.TrackID]; ok && id != ev.ID {
			t.Errorf("track %d: event id %s, then %s", ev.TrackID, id, ev.ID)
		}
		state[ev.TrackID], tracks[ev.TrackID], ids[ev.TrackID] = ev.Type, ev.Label, ev.ID
	}
	for id, st := range state {
		if st != events.EventEnd {
			t.Errorf("track %d: new without end (last %s)", id, st)
		}
	}
	return tracks
}

// A run's events over MQTT and a webhook that fails its first two calls:
// every new has its end, ids are stable and match the detections file's
// track_id, snapshots are on disk, the webhook gets every event once it
// recovers.
func TestRunPublishesTrackEvents(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	sub := mqtttest.Subscribe(t, b, "checker", "htcstream/#", "", "")

	var mu sync.Mutex
	var calls int
	var hooked []events.Event
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls <= 2 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		var ev events.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		hooked = append(hooked, ev)
	}))
	defer hook.Close()

	cfg, _ := eventsRun(t, b.URL())
	cfg.Webhooks = []WebhookConfig{{URL: hook.URL + "/events?token=x", Headers: map[string]string{"X-Test": "1"}}}
	var out strings.Builder
	if err := Execute(cfg, Options{MaxFrames: 18, Stdout: &out}); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	evs := readEvents(t, sub, "htcstream/sample/events", time.Second)
	tracks := checkLifecycles(t, evs)
	if len(tracks) < 2 {
		t.Fatalf("%d tracks in %d events; want the sample's objects:\n%s", len(tracks), len(evs), out.String())
	}
	for _, ev := range evs {
		if ev.Snapshot == "" {
			t.Errorf("track %d %s: no snapshot", ev.TrackID, ev.Type)
		} else if st, err := os.Stat(ev.Snapshot); err != nil || st.Size() < 1000 {
			t.Errorf("track %d: snapshot %s: %v", ev.TrackID, ev.Snapshot, err)
		}
		if ev.Mask == nil || ev.Width != 320 || ev.Height != 240 || len(ev.StageScores) == 0 {
			t.Errorf("track %d %s: mask %v, %dx%d, stage scores %v", ev.TrackID, ev.Type, ev.Mask != nil, ev.Width, ev.Height, ev.StageScores)
		}
	}
	// The detections file: every frame, the ids the events name, one label
	// per id.
	lines := readDetections(t, cfg.Outputs.Detections)
	if len(lines) != 18 {
		t.Errorf("%d detection lines, want 18", len(lines))
	}
	fileLabel := map[int64]string{}
	for _, l := range lines {
		for _, d := range l.Detections {
			if d.TrackID == 0 {
				continue
			}
			id := int64(d.TrackID)
			if prev, ok := fileLabel[id]; ok && prev != d.Label {
				t.Errorf("track %d is %s and %s in the detections", id, prev, d.Label)
			}
			fileLabel[id] = d.Label
		}
	}
	for id, label := range tracks {
		if fileLabel[id] != label {
			t.Errorf("track %d: %s in the events, %q in the detections", id, label, fileLabel[id])
		}
	}
	if !strings.Contains(out.String(), "mqtt: "+strconv.Itoa(len(evs))+" events published, 0 dropped") {
		t.Errorf("summary:\n%s", out.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != len(evs)+2 || len(hooked) != len(evs) {
		t.Errorf("webhook: %d calls, %d events; MQTT had %d", calls, len(hooked), len(evs))
	}
	for i := range min(len(hooked), len(evs)) {
		if hooked[i].ID != evs[i].ID || hooked[i].Type != evs[i].Type {
			t.Errorf("webhook event %d: %s %s, MQTT's %s %s", i, hooked[i].Type, hooked[i].ID, evs[i].Type, evs[i].ID)
			break
		}
	}
}

// lineWriter hands each line written to it to a channel (the run's stdout,
// for the preview's address).
type lineWriter struct {
	mu    sync.Mutex
	buf   strings.Builder
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		select {
		case w.lines <- sc.Text():
		default:
		}
	}
	return len(p), nil
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// metricValue scrapes url and returns the value of series (0 when absent).
func metricValue(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// The broker is killed mid-run and started again: segmentation goes on
// (the detections file is complete), the sink reconnects and sends what
// fit its outbox, and what did not is counted in /metrics.
func TestRunSurvivesBrokerRestart(t *testing.T) {
	b := mqtttest.StartBroker(t, "")
	sub := mqtttest.Subscribe(t, b, "checker", "htcstream/sample/events", "", "")
	cfg, _ := eventsRun(t, b.URL())
	cfg.MQTT.Outbox = 1
	cfg.Events.UpdateInterval = time.Millisecond // an update at every better score: events while the broker is away
	cfg.Outputs.Serve = "127.0.0.1:0"
	const frames = 32
	out := &lineWriter{lines: make(chan string, 16)}
	done := make(chan error, 1)
	go func() { done <- Execute(cfg, Options{MaxFrames: frames, Stdout: out}) }()

	var metrics string
	select {
	case l := <-out.lines:
		if !strings.HasPrefix(l, "preview: ") {
			t.Fatalf("first line %q", l)
		}
		metrics = strings.Fields(strings.TrimPrefix(l, "preview: "))[0] + "metrics"
	case err := <-done:
		t.Fatalf("run ended at once: %v", err)
	}
	select {
	case <-sub.Msgs:
	case <-time.After(60 * time.Second):
		t.Fatal("no event before the broker goes")
	}
	b.Stop(syscall.SIGKILL)
	// The sink learns of the lost connection from its client a moment
	// after the kill (and, with an outbox of 1, may drop before that):
	// wait for both, each with a deadline.
	deadline := time.Now().Add(60 * time.Second)
	for metricValue(t, metrics, "htcstream_mqtt_dropped_total") < 1 || metricValue(t, metrics, "htcstream_mqtt_connected") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("with the broker away: dropped %v, connected %v:\n%s", metricValue(t, metrics, "htcstream_mqtt_dropped_total"),
				metricValue(t, metrics, "htcstream_mqtt_connected"), out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Start()
	sub = mqtttest.Subscribe(t, b, "checker2", "htcstream/sample/events", "", "")
	for metricValue(t, metrics, "htcstream_mqtt_connected") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the sink did not reconnect:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	dropped := metricValue(t, metrics, "htcstream_mqtt_dropped_total")
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := len(readDetections(t, cfg.Outputs.Detections)); n != frames {
		t.Errorf("%d detection lines, want %d: segmentation stopped with the broker", n, frames)
	}
	after := readEvents(t, sub, "htcstream/sample/events", time.Second)
	if len(after) == 0 {
		t.Errorf("no event after the broker came back:\n%s", out.String())
	}
	m := regexp.MustCompile(`mqtt: (\d+) events published, (\d+) dropped`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no mqtt summary:\n%s", out.String())
	}
	if d, _ := strconv.ParseFloat(m[2], 64); d < dropped {
		t.Errorf("summary says %s dropped, /metrics said %v", m[2], dropped)
	}
	t.Logf("%s published, %s dropped; %d events after the restart", m[1], m[2], len(after))
}

// Wrong MQTT credentials: the run goes on and succeeds, the log has one
// error line saying what to check, and the sink kept retrying.
func TestRunWithWrongMQTTCredentials(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "cam", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd (Debian's mosquitto): %v: %s", err, out)
	}
	b := mqtttest.StartBroker(t, "allow_anonymous false\npassword_file "+pw+"\n")
	cfg, _ := eventsRun(t, b.URL())
	t.Setenv("HTC_TEST_MQTT_PASSWORD", "nope")
	cfg.MQTT.Username, cfg.MQTT.Password = "cam", os.Getenv("HTC_TEST_MQTT_PASSWORD")
	logs := &mqtttest.SyncBuffer{}
	var out strings.Builder
	if err := Execute(cfg, Options{MaxFrames: 8, Stdout: &out, Logger: slog.New(slog.NewTextHandler(logs, nil))}); err != nil {
		t.Fatalf("run: %v", err)
	}
	errLines := regexp.MustCompile(`(?m)^.*level=ERROR.*$`).FindAllString(logs.String(), -1)
	if len(errLines) != 1 || !strings.Contains(errLines[0], "check the username and password") {
		t.Errorf("error lines %q, want one naming the credentials:\n%s", errLines, logs)
	}
	if strings.Contains(logs.String(), "nope") {
		t.Error("the log shows the password")
	}
	m := regexp.MustCompile(`mqtt: 0 events published, (\d+) dropped, (\d+) errors`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("summary:\n%s", out.String())
	}
	if n, _ := strconv.Atoi(m[2]); n < 2 {
		t.Errorf("%s errors: the sink did not retry", m[2])
	}
	if n := len(readDetections(t, cfg.Outputs.Detections)); n != 8 {
		t.Errorf("%d detection lines, want 8", n)
	}
}
