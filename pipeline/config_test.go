package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestSampleConfigIsTheDefault loads configs/pipeline/default.yaml: it must
// parse, validate, and say exactly what DefaultRunConfig says.
func TestSampleConfigIsTheDefault(t *testing.T) {
	c, err := LoadRunConfig("../configs/pipeline/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalise(c), normalise(DefaultRunConfig())) {
		t.Fatalf("default.yaml says\n%+v\nDefaultRunConfig says\n%+v", c, DefaultRunConfig())
	}
}

// normalise treats empty and nil lists alike, and forgets where a file was.
func normalise(c RunConfig) RunConfig {
	c.dir, c.cameraNodes = "", nil
	if len(c.Cameras) == 0 {
		c.Cameras = nil
	}
	if len(c.Filter.Classes) == 0 {
		c.Filter.Classes = nil
	}
	if len(c.Filter.Thresholds) == 0 {
		c.Filter.Thresholds = nil
	}
	if len(c.Server.Users) == 0 {
		c.Server.Users = nil
	}
	if len(c.Server.AllowedOrigins) == 0 {
		c.Server.AllowedOrigins = nil
	}
	if len(c.Server.AllowedHosts) == 0 {
		c.Server.AllowedHosts = nil
	}
	if len(c.Model.TTAScales) == 0 {
		c.Model.TTAScales = nil
	}
	if len(c.Model.StageWeights) == 0 {
		c.Model.StageWeights = nil
	}
	if len(c.Model.Stages) == 0 {
		c.Model.Stages = nil
	}
	if len(c.Sources) == 0 {
		c.Sources = nil
	}
	if len(c.WebRTC.ICEServers) == 0 {
		c.WebRTC.ICEServers = nil
	}
	if len(c.Events.Labels) == 0 {
		c.Events.Labels = nil
	}
	if len(c.Events.Zones) == 0 {
		c.Events.Zones = nil
	}
	if len(c.Webhooks) == 0 {
		c.Webhooks = nil
	}
	return c
}

func TestRunConfigErrorsNameKeyAndFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, says string }{
		{"model:\n  bundel: x\n", "bundel"},
		{"batch:\n  size: 0\n", "batch.size 0"},
		{"live:\n  transport: quic\n", `live.transport "quic"`},
		{"model:\n  provider: npu\noverlay:\n  alpha: 2\n", "overlay.alpha 2"},
		{"batch:\n  deadline: soon\n", "soon"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRunConfig(p)
		if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: got %v, want an error naming %s and %q", c.yaml, err, p, c.says)
		}
	}
	p := filepath.Join(dir, "empty.yaml")
	os.WriteFile(p, nil, 0o644)
	if _, err := LoadRunConfig(p); err != nil {
		t.Errorf("an empty file means the defaults: %v", err)
	}
}

// TestEveryShippedConfigLoads: each file under configs/pipeline parses,
// validates and resolves (with the environment its ${...} names).
func TestEveryShippedConfigLoads(t *testing.T) {
	t.Setenv("HTCSTREAM_TOKEN", "s3cret")
	t.Setenv("FRONT_PASS", "p@ss")
	t.Setenv("MQTT_PASSWORD", "m")
	t.Setenv("HOOK_TOKEN", "h")
	files, _ := filepath.Glob("../configs/pipeline/*.yaml")
	if len(files) < 2 {
		t.Fatalf("shipped configs: %v", files)
	}
	for _, f := range files {
		c, err := LoadRunConfig(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(c.Cameras) > 0 {
			c.Model.Bundle = "../examples/models/htc_tiny_synthetic" // the test binary is not beside it
			if _, err := c.Resolve(); err != nil {
				t.Errorf("%s: resolve: %v", f, err)
			}
		}
	}
}

func TestCamerasTakeTheGlobalsTheyDoNotName(t *testing.T) {
	t.Setenv("HTCSTREAM_TOKEN", "s3cret")
	t.Setenv("FRONT_PASS", "p@ss")
	t.Setenv("MQTT_PASSWORD", "m")
	t.Setenv("HOOK_TOKEN", "h")
	c, err := LoadRunConfig("../configs/pipeline/cameras.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.Model.Bundle = "../examples/models/htc_tiny_synthetic"
	c.Model.Flip = false
	c.Overlay.Alpha = 0.25 // as a flag would, after the file
	cams, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Camera{}
	for _, cam := range cams {
		by[cam.Name] = cam
	}
	if len(cams) != 2 || by["doorbell_test"].Name != "" {
		t.Fatalf("enabled cameras: %v", cams)
	}
	front, garage := by["front_door"], by["garage"]
	if front.URL != "rtsp://viewer:p@ss@192.168.1.20:554/stream1" || c.Server.Token != "s3cret" {
		t.Errorf("${...}: url %q, token %q", front.URL, c.Server.Token)
	}
	if !front.Flip || len(front.TTAScales) != 2 || front.TTAScales[1].String() != "1666x1000" {
		t.Errorf("front's own views: flip %v, scales %v", front.Flip, front.TTAScales)
	}
	if front.MinArea != 100 || front.ScoreThreshold != 0.4 || front.Thresholds["person"] != 0.6 || front.Live.Transport != "udp" {
		t.Errorf("front: %+v", front.CameraConfig)
	}
	if garage.Flip || garage.ScoreThreshold != 0.5 || garage.MinArea != 100 || garage.Overlay.StuffTint != 0.3 ||
		garage.Overlay.Alpha != 0.25 || garage.Live.Transport != "tcp" || len(garage.Thresholds) != 0 {
		t.Errorf("garage: %+v", garage.CameraConfig)
	}
	if !front.Events.Enabled || len(front.Events.Labels) != 2 || front.Events.Zones[0] != "porch" || len(front.Zones) != 2 ||
		front.Events.MinDuration != time.Second || front.Events.Tracker.MaxMisses != 30 {
		t.Errorf("front's events: %+v, zones %v", front.Events, front.Zones)
	}
	if !garage.Events.Enabled || garage.Events.Labels[0] != "car" || garage.Events.Tracker.MaxMisses != 75 ||
		garage.Events.Tracker.MinHits != 3 || len(garage.Events.Zones) != 0 || garage.Events.UpdateInterval != 30*time.Second {
		t.Errorf("garage's events: %+v", garage.Events)
	}
	if c.MQTT.Password != "m" || c.MQTT.QoS != 1 || len(c.Webhooks) != 1 || c.Webhooks[0].Headers["Authorization"] != "Bearer h" {
		t.Errorf("mqtt %+v, webhooks %+v", c.MQTT, c.Webhooks)
	}
	if want, _ := filepath.Abs("../configs/pipeline/front_door.mp4"); front.Outputs.Video != want {
		t.Errorf("front's video %q, want %q (beside the config file)", front.Outputs.Video, want)
	}
	if want, _ := filepath.Abs("../configs/pipeline/detections.jsonl"); c.Outputs.Detections != want {
		t.Errorf("detections %q, want %q", c.Outputs.Detections, want)
	}
}

func TestConfigMistakesNameKeyAndLine(t *testing.T) {
	dir := t.TempDir()
	os.Unsetenv("HTCSTREAM_NOPE")
	for _, c := range []struct{ yaml, says string }{
		{"model:\n  bundel: x\n", `line 2: unknown key "model.bundel" (known here: bundle, ensemble, flip, provider, score_threshold, stage_weights, stages, threads, tta_scales)`},
		{"cameras:\n  gate:\n    url: a.mp4\n    ouputs: {}\n", `line 4: unknown key "cameras.gate.ouputs"`},
		{"cameras:\n  gate:\n    url: rtsp://u:${HTCSTREAM_NOPE}@x/\n", "line 3: environment variable HTCSTREAM_NOPE is not set"},
		{"model:\n  tta_scales: [100000x100000]\n", "above 4096"},
		{"cameras:\n  gate:\n    thresholds: {person: 2}\n    url: x.mp4\n", "cameras.gate.thresholds.person 2"},
		{"cameras:\n  bad name:\n    url: x.mp4\n", "cameras.bad name"},
		{"cameras:\n  gate:\n    enabled: true\n", "cameras.gate.url is missing"},
		{"events:\n  tracker:\n    min_hits: 0\n", "events.tracker: invalid tracking settings: min_hits 0 is below 1"},
		{"events:\n  tracker:\n    min_hit: 2\n", `line 3: unknown key "events.tracker.min_hit"`},
		{"events:\n  snapshots:\n    frame: raw\n", `events.snapshots.frame "raw": want annotated or clean`},
		{"events:\n  update_interval: 0s\n", "events.update_interval 0s: want a positive duration"},
		{"events:\n  store:\n    driver: mysql\n", `events.store.driver "mysql": want sqlite or postgres`},
		{"events:\n  store:\n    driver: postgres\n", "events.store: driver postgres needs a dsn"},
		{"events:\n  store:\n    dsn: postgres://db/x\n", "events.store: a dsn is for driver: postgres"},
		{"events:\n  store:\n    path: e.db\n    retain_days: -1\n", "events.store: retain_days -1"},
		{"cameras:\n  gate:\n    url: x.mp4\n    zones:\n      door: [[0, 0], [640, 0], [1, 1]]\n", "cameras.gate.zones.door: point [640, 0] is outside the frame: zone points are relative, 0..1"},
		{"cameras:\n  gate:\n    url: x.mp4\n    zones:\n      door: [[0, 0], [1, 1]]\n", "cameras.gate.zones.door: 2 points"},
		{"cameras:\n  gate:\n    url: x.mp4\n    events:\n      enabled: true\n      zones: [yard]\n", `cameras.gate.events.zones: "yard" is not one of the camera's zones (it has none)`},
		{"cameras:\n  gate:\n    url: x.mp4\n    events:\n      min_hits: 2\n", `line 5: unknown key "cameras.gate.events.min_hits"`},
		{"mqtt:\n  broker: http://x\n", `mqtt: broker "http://x": want a tcp://`},
		{"mqtt:\n  broker: tcp://x:1883\n  qos: 3\n", "mqtt.qos 3: want 0, 1 or 2"},
		{"webhooks:\n  - url: ftp://x/hook\n", "webhooks[0]: webhook ftp://x/hook: want an http:// or https:// URL"},
		{"webhooks:\n  - url: http://x/hook\n    header: {}\n", `line 3: unknown key "webhooks[0].header"`},
		{"interval: 0\n", "interval \"0\": want auto or a whole number of frames >= 1"},
		{"cameras:\n  gate:\n    url: x.mp4\n    interval: sometimes\n", "interval \"sometimes\""},
		{"cameras:\n  gate:\n    url: x.mp4\n    interval: auto\n    timing: smooth\n", "cameras.gate.timing smooth holds frames up to one interval: it needs interval: N"},
		{"timing: fast\n", `timing "fast": want live or smooth`},
		{"propagation: optical\n", `propagation "optical": want box or flow`},
		{"cameras:\n  gate:\n    url: x.mp4\n    propagation: dense\n", `cameras.gate.propagation "dense": want box or flow`},
		{"motion:\n  threshold: 300\n", "motion: invalid motion settings: threshold 300"},
		{"motion:\n  mask: [[[0, 0], [1, 0]]]\n", "mask 0 has 2 points"},
		{"cameras:\n  gate:\n    url: x.mp4\n    zone_overlap: 1.5\n", "cameras.gate.zone_overlap 1.5"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRunConfig(p)
		if err == nil || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "struct") {
			t.Errorf("%q: got %v, want an error saying %q", c.yaml, err, c.says)
		}
	}
}

// A camera's schedule: its own keys over the globals, the source kind's
// defaults for what neither names.
func TestCameraSchedule(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "interval: 3\nmotion:\n  max_interval: 20s\ncameras:\n  gate:\n    url: rtsp://x/\n    interval: auto\n" +
		"    motion:\n      threshold: 12\n      mask: [[[0, 0], [0.2, 0], [0.2, 0.1]]]\n  file:\n    url: x.mp4\n"
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadRunConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	cams, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	gate, file := cams[1].Schedule(true), cams[0].Schedule(false)
	if gate.Interval != IntervalAuto || gate.Timing != TimingLive || gate.Motion == nil || gate.Motion.Threshold != 12 ||
		len(gate.Motion.Mask) != 1 || gate.MaxInterval != 20*time.Second {
		t.Errorf("the live camera: %+v (motion %+v)", gate, gate.Motion)
	}
	if file.Interval != 3 || file.Timing != "" || file.Motion != nil {
		t.Errorf("the file: %+v", file)
	}
	if d := DefaultRunConfig().cameraDefaults().Schedule(false); !d.everyFrame() {
		t.Errorf("a file by default: %+v", d)
	}
	if d := DefaultRunConfig().cameraDefaults().Schedule(true); d.Interval != IntervalAuto || d.Motion == nil {
		t.Errorf("a live camera by default: %+v", d)
	}
}
