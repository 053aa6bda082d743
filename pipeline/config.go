package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/examples/models"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/ingest"
	"github.com/htcstream/htcstream/internal/install"
	"github.com/htcstream/htcstream/motion"
	"github.com/htcstream/htcstream/overlay"
	"github.com/htcstream/htcstream/stream/encode"
	"github.com/htcstream/htcstream/stream/web"
)

// ErrConfig marks an error in what the user asked for (a bad value, an
// unknown key, a model option the bundle cannot take): the command exits 2.
var ErrConfig = errors.New("configuration")

// RunConfig is the configuration of `htcstream run` (configs/pipeline/
// default.yaml spells out every default; configs/pipeline/cameras.yaml shows
// named cameras).
type RunConfig struct {
	Model ModelConfig `yaml:"model"`
	Batch struct {
		Size     int           `yaml:"size"`
		Deadline time.Duration `yaml:"deadline"`
	} `yaml:"batch"`
	// Filter is every camera's default detection filter.
	Filter FilterConfig `yaml:"filter"`
	// Cameras are named sources, each with its own settings over the
	// global ones (model.tta_scales/flip/score_threshold, filter, overlay,
	// live, loop).
	Cameras map[string]CameraConfig `yaml:"cameras"`
	// Sources are unnamed URLs or paths (and the command line's): each is a
	// camera named after its file name with the global settings.
	Sources []string `yaml:"sources"`
	Loop    bool     `yaml:"loop"`
	// Interval, Timing and Motion are every camera's keyframe schedule
	// (docs/outputs.md, "Every frame"); cameras override them.
	Interval    Interval     `yaml:"interval"`
	Timing      Timing       `yaml:"timing"`
	Propagation Propagation  `yaml:"propagation"`
	Motion      MotionConfig `yaml:"motion"`
	Outputs     struct {
		// Video: one annotated mp4; with several cameras NAME-<camera>.mp4.
		Video string `yaml:"video"`
		// Detections: one JSON-lines file for all cameras.
		Detections string `yaml:"detections"`
		// Serve: the browser preview's listen address.
		Serve string `yaml:"serve"`
	} `yaml:"outputs"`
	// Server secures the preview and API (outputs.serve); see docs/web-api.md.
	Server  ServerConfig  `yaml:"server"`
	Overlay OverlayConfig `yaml:"overlay"`
	WebRTC  struct {
		Codec      string   `yaml:"codec"`
		ICEServers []string `yaml:"ice_servers"`
		UDPPortMin uint16   `yaml:"udp_port_min"`
		UDPPortMax uint16   `yaml:"udp_port_max"`
	} `yaml:"webrtc"`
	Live LiveConfig `yaml:"live"`
	// Events: tracking, events and snapshots (cameras override the rules
	// in cameras.NAME.events); MQTT and Webhooks: where events go.
	Events EventsConfig `yaml:"events"`
	// Record: continuous recording of each camera's own video (cameras
	// override it in cameras.NAME.record).
	Record   RecordConfig    `yaml:"record"`
	MQTT     MQTTConfig      `yaml:"mqtt"`
	Webhooks []WebhookConfig `yaml:"webhooks"`

	// dir is the folder relative paths of the file are against ("" for
	// the working directory).
	dir string
	// cameraNodes keep each camera's own keys, so Resolve lays them over
	// the globals as they are then (after the command line's flags).
	cameraNodes map[string]*yaml.Node
}

// ServerConfig is the web server's security. Serving beyond this machine
// needs a token or users (or insecure).
type ServerConfig struct {
	// Token: the bearer token of WHEP, /streams, /metrics and snapshots
	// (write ${HTCSTREAM_TOKEN}, not the token itself).
	Token string `yaml:"token"`
	// Users: basic-auth accounts, name: password.
	Users map[string]string `yaml:"users"`
	// TLSCert, TLSKey: PEM files for HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// AllowedOrigins: other origins whose pages may call the API (CORS).
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHosts: host names the server answers to besides IPs and
	// localhost (DNS rebinding).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// Insecure serves a non-loopback address without credentials.
	Insecure bool `yaml:"insecure"`
}

// serverConfig is the stream server's configuration for this run.
func (c RunConfig) serverConfig(log *slog.Logger) web.ServerConfig {
	s := c.Server
	return web.ServerConfig{Addr: c.Outputs.Serve, Token: s.Token, Users: s.Users, TLSCert: s.TLSCert, TLSKey: s.TLSKey,
		AllowedOrigins: s.AllowedOrigins, AllowedHosts: s.AllowedHosts, Insecure: s.Insecure, Logger: log}
}

// ModelConfig chooses the model and how it tests.
type ModelConfig struct {
	// Bundle: empty finds the bundled default model (DefaultBundle).
	Bundle       string        `yaml:"bundle"`
	Provider     string        `yaml:"provider"`
	Threads      int           `yaml:"threads"`
	TTAScales    []infer.Scale `yaml:"tta_scales"`
	Flip         bool          `yaml:"flip"`
	Ensemble     string        `yaml:"ensemble"`
	StageWeights []float32     `yaml:"stage_weights"`
	// Stages (1-based) whose scores and masks are used; empty: all (the
	// stage-wise test of the HTC paper's Table 4).
	Stages         []int   `yaml:"stages"`
	ScoreThreshold float64 `yaml:"score_threshold"`
}

// FilterConfig keeps the detections a camera cares about, before drawing
// and before any output.
type FilterConfig struct {
	// Classes: only these labels (empty: all).
	Classes []string `yaml:"classes"`
	// Thresholds: a label's own minimum score, above score_threshold.
	Thresholds map[string]float64 `yaml:"thresholds"`
	// MinArea: the smallest box area kept, in frame pixels (0: any).
	MinArea float64 `yaml:"min_area"`
}

// OverlayConfig is how results are drawn.
type OverlayConfig struct {
	Alpha   float32 `yaml:"alpha"`
	ColorBy string  `yaml:"color_by"`
	Contour bool    `yaml:"contour"`
	Boxes   bool    `yaml:"boxes"`
	Labels  bool    `yaml:"labels"`
	HUD     bool    `yaml:"hud"`
	// StuffTint > 0 runs the semantic branch's map and tints stuff
	// regions at this opacity.
	StuffTint float32 `yaml:"stuff_tint"`
}

// style is the overlay package's form of o.
func (o OverlayConfig) style() overlay.Style {
	return overlay.Style{Alpha: o.Alpha, ColorBy: overlay.ColorBy(o.ColorBy), Contour: o.Contour, Boxes: o.Boxes,
		Labels: o.Labels, HUD: o.HUD}
}

// overlayConfig is the YAML form of an overlay style (no stuff tint).
func overlayConfig(s overlay.Style) OverlayConfig {
	return OverlayConfig{Alpha: s.Alpha, ColorBy: string(s.ColorBy), Contour: s.Contour, Boxes: s.Boxes,
		Labels: s.Labels, HUD: s.HUD}
}

// LiveConfig is how live sources connect.
type LiveConfig struct {
	// HWDecode: "", "cuda" or "vaapi" (falls back to software).
	HWDecode    string        `yaml:"hw_decode"`
	Transport   string        `yaml:"transport"`
	OpenTimeout time.Duration `yaml:"open_timeout"`
	ReadTimeout time.Duration `yaml:"read_timeout"`
	MaxBackoff  time.Duration `yaml:"max_backoff"`
}

// ingestConfig is the ingest package's form of l.
func (l LiveConfig) ingestConfig() ingest.Config {
	return ingest.Config{HWDecode: l.HWDecode, Transport: l.Transport, OpenTimeout: l.OpenTimeout,
		ReadTimeout: l.ReadTimeout, MaxBackoff: l.MaxBackoff}
}

// CameraConfig is one named camera. Every key it leaves out takes the
// global value.
type CameraConfig struct {
	URL     string `yaml:"url"`
	Enabled bool   `yaml:"enabled"`
	Loop    bool   `yaml:"loop"`
	// TTAScales and Flip: this camera's test-time views (cameras with the
	// same views share batches).
	TTAScales      []infer.Scale `yaml:"tta_scales"`
	Flip           bool          `yaml:"flip"`
	ScoreThreshold float64       `yaml:"score_threshold"`
	FilterConfig   `yaml:",inline"`
	Outputs        struct {
		// Video: this camera's own annotated mp4.
		Video string `yaml:"video"`
		// Detections: this camera's own JSON-lines file (besides the
		// global one).
		Detections string `yaml:"detections"`
		// Serve: published in the browser preview (when outputs.serve is
		// set). Default true.
		Serve bool `yaml:"serve"`
	} `yaml:"outputs"`
	Overlay OverlayConfig `yaml:"overlay"`
	Live    LiveConfig    `yaml:"live"`
	// Events: this camera's tracking and event rules over the global
	// events: section's.
	Events EventRules `yaml:"events"`
	// Zones: named polygons, [[x, y], ...] relative to the frame (0..1).
	Zones map[string]Zone `yaml:"zones"`
	// ZoneOverlap > 0: an object is in a zone when at least this share of
	// its mask is inside it (a person half inside a doorway is in it); 0
	// (default): when its box's bottom centre is.
	ZoneOverlap float64 `yaml:"zone_overlap"`
	// Interval: how often the model sees this camera's frames: auto (the
	// newest frame when the model is free; live sources' default) or N
	// (every Nth frame; files' default 1). Timing: live (every frame at
	// once with the latest tracks; live sources' default) or smooth (hold
	// up to one interval and interpolate; files' default). Propagation:
	// how objects move on the frames between keyframes, flow (optical
	// flow on each object's region; the default) or box (the tracker's
	// prediction).
	Interval    Interval    `yaml:"interval"`
	Timing      Timing      `yaml:"timing"`
	Propagation Propagation `yaml:"propagation"`
	// Motion gates the model on motion (default on for live sources, off
	// for files).
	Motion MotionConfig `yaml:"motion"`
	// Record: this camera's recording over the global record: section.
	Record RecordConfig `yaml:"record"`
}

// MotionConfig is a camera's motion gating: when nothing moves in the
// picture and no track moves, the model is not run.
type MotionConfig struct {
	// Enabled: default on for live sources, off for files.
	Enabled *bool `yaml:"enabled"`
	// The detector's settings (frame_height, threshold, contour_area,
	// frame_alpha, lightning_threshold, mask polygons); zero: Frigate's
	// defaults.
	motion.Config `yaml:",inline"`
	// MaxInterval forces a keyframe after this long without one, so new
	// still objects are found (default 10s).
	MaxInterval time.Duration `yaml:"max_interval"`
}

// Schedule is the camera's keyframe policy for its kind of source.
func (cam CameraConfig) Schedule(live bool) Schedule {
	sch := Schedule{Interval: cam.Interval, Timing: cam.Timing, Propagation: cam.Propagation, MaxInterval: cam.Motion.MaxInterval}
	if sch.Interval == 0 && live {
		sch.Interval = IntervalAuto
	}
	if sch.Timing == "" && live {
		sch.Timing = TimingLive
	}
	on := live
	if cam.Motion.Enabled != nil {
		on = *cam.Motion.Enabled
	}
	if on {
		mc := cam.Motion.Config
		sch.Motion = &mc
	}
	return sch
}

// Camera is a camera with everything resolved: its name, its source and
// its settings over the globals.
type Camera struct {
	Name string
	CameraConfig
}

// DefaultRunConfig is configs/pipeline/default.yaml's content.
func DefaultRunConfig() RunConfig {
	var c RunConfig
	c.Model.Provider = "cpu"
	c.Model.Ensemble = "logits"
	c.Model.ScoreThreshold = 0.3
	c.Batch.Size = 1
	c.Batch.Deadline = 20 * time.Millisecond
	c.Overlay = overlayConfig(overlay.DefaultStyle())
	c.WebRTC.Codec = string(encode.H264)
	c.Live = LiveConfig{Transport: ingest.DefaultTransport, OpenTimeout: ingest.DefaultOpenTimeout,
		ReadTimeout: ingest.DefaultReadTimeout, MaxBackoff: ingest.DefaultMaxBackoff}
	c.Events = defaultEvents()
	c.Record = defaultRecord()
	c.MQTT = defaultMQTT()
	return c
}

// envRef is a ${NAME} reference to an environment variable (secrets stay
// out of the file).
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// substituteEnv replaces every ${NAME} in the document's values (not in
// its comments or keys); an unset variable is an error naming it and its
// line.
func substituteEnv(n *yaml.Node, path string) error {
	var errs []error
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
			whole := envRef.FindString(n.Value) == n.Value
			n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
				name := envRef.FindStringSubmatch(ref)[1]
				v, ok := os.LookupEnv(name)
				if !ok {
					errs = append(errs, fmt.Errorf("%s line %d: environment variable %s is not set", path, n.Line, name))
				}
				return v
			})
			if whole && n.Style == 0 {
				n.Tag = "" // ${PORT} alone takes the type its value reads as
			} else {
				n.Tag = "!!str" // part of a longer text (a URL): a string
			}
		}
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 {
				continue // keys stay as written
			}
			walk(c)
		}
	}
	walk(n)
	return errors.Join(errs...)
}

// LoadRunConfig reads path over the defaults: ${ENV} references are
// substituted, relative paths are against the file's folder, unknown keys
// and bad values are errors naming the file, the key and its line.
func LoadRunConfig(path string) (RunConfig, error) {
	c := DefaultRunConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return c, fmt.Errorf("%w: config %s: %v", ErrConfig, path, err)
	}
	if err := substituteEnv(&doc, path); err != nil {
		return c, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if len(doc.Content) == 0 { // an empty file means all defaults
		c.dir = absDir(path)
		return c, nil
	}
	root := doc.Content[0]
	if err := checkKeys(root, typeOfRunConfig, ""); err != nil {
		return c, fmt.Errorf("%w: config %s: %w", ErrConfig, path, err)
	}
	if err := root.Decode(&c); err != nil {
		return c, fmt.Errorf("%w: config %s: %v", ErrConfig, path, cleanYAMLError(err))
	}
	// Cameras start from the globals, then take their own keys.
	if cams := mappingValue(root, "cameras"); cams != nil {
		c.Cameras = map[string]CameraConfig{}
		for i := 0; i+1 < len(cams.Content); i += 2 {
			name, node := cams.Content[i].Value, cams.Content[i+1]
			cam := c.cameraDefaults()
			if err := node.Decode(&cam); err != nil {
				return c, fmt.Errorf("%w: config %s: camera %s: %v", ErrConfig, path, name, cleanYAMLError(err))
			}
			c.Cameras[name] = cam
			if c.cameraNodes == nil {
				c.cameraNodes = map[string]*yaml.Node{}
			}
			c.cameraNodes[name] = node
		}
	}
	c.dir = absDir(path)
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// absDir is the absolute folder of a file.
func absDir(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		return filepath.Dir(a)
	}
	return filepath.Dir(path)
}

// cameraDefaults is a camera with every global setting and nothing of its own.
func (c RunConfig) cameraDefaults() CameraConfig {
	var cam CameraConfig
	cam.Enabled = true
	cam.Loop = c.Loop
	cam.Flip = c.Model.Flip
	cam.ScoreThreshold = c.Model.ScoreThreshold
	// copies: decoding a camera's keys must not write into the globals
	cam.TTAScales = append([]infer.Scale(nil), c.Model.TTAScales...)
	cam.Classes = append([]string(nil), c.Filter.Classes...)
	cam.MinArea = c.Filter.MinArea
	if c.Filter.Thresholds != nil {
		cam.Thresholds = make(map[string]float64, len(c.Filter.Thresholds))
		for k, v := range c.Filter.Thresholds {
			cam.Thresholds[k] = v
		}
	}
	cam.Outputs.Serve = true
	cam.Overlay = c.Overlay
	cam.Live = c.Live
	cam.Events = c.Events.EventRules
	cam.Events.Labels = append([]string(nil), c.Events.Labels...)
	cam.Events.Zones = append([]string(nil), c.Events.Zones...)
	cam.Interval, cam.Timing, cam.Propagation, cam.Motion = c.Interval, c.Timing, c.Propagation, c.Motion
	if c.Motion.Enabled != nil {
		on := *c.Motion.Enabled
		cam.Motion.Enabled = &on // decoding a camera's keys must not write into the globals
	}
	cam.Motion.Mask = append([]motion.Polygon(nil), c.Motion.Mask...)
	cam.Record = c.Record
	return cam
}

func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// cleanYAMLError drops yaml.v3's "unmarshal errors:" wrapping and Go type
// names, which say nothing to a user.
func cleanYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
	msg = strings.Join(strings.Fields(msg), " ")
	msg = regexp.MustCompile(` into [A-Za-z0-9_.\[\]*]+`).ReplaceAllString(msg, "")
	return strings.ReplaceAll(msg, "cannot unmarshal !!", "cannot read a ")
}

// Resolve makes the configuration ready to run: the command line's
// sources become cameras, relative paths are made absolute (against the
// config file's folder, or the working directory for what the command line
// gave), the model is found. It returns the enabled cameras in name order.
func (c *RunConfig) Resolve() ([]Camera, error) {
	abs := func(p string) string {
		if p == "" || p == "-" || filepath.IsAbs(p) || strings.HasPrefix(p, "/dev/") {
			return p
		}
		if c.dir != "" {
			return filepath.Join(c.dir, p)
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	// an empty bundle is the default model, found when the model loads
	c.Model.Bundle = abs(c.Model.Bundle)
	c.Outputs.Video = abs(c.Outputs.Video)
	c.Outputs.Detections = abs(c.Outputs.Detections)
	c.Server.TLSCert = abs(c.Server.TLSCert)
	c.Server.TLSKey = abs(c.Server.TLSKey)
	c.Events.Snapshots.Dir = abs(c.Events.Snapshots.Dir)
	c.Events.Store.Path = abs(c.Events.Store.Path)
	c.Record.Dir = abs(c.Record.Dir)
	c.MQTT.CAFile = abs(c.MQTT.CAFile)
	c.MQTT.CertFile = abs(c.MQTT.CertFile)
	c.MQTT.KeyFile = abs(c.MQTT.KeyFile)

	var cams []Camera
	names := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(c.Cameras)) {
		cam := c.Cameras[name]
		if node := c.cameraNodes[name]; node != nil {
			cam = c.cameraDefaults()
			if err := node.Decode(&cam); err != nil {
				return nil, fmt.Errorf("%w: camera %s: %v", ErrConfig, name, cleanYAMLError(err))
			}
		}
		names[name] = true
		if !cam.Enabled {
			continue
		}
		cam.URL = sourcePath(cam.URL, abs)
		cam.Outputs.Video = abs(cam.Outputs.Video)
		cam.Outputs.Detections = abs(cam.Outputs.Detections)
		cam.Record.Dir = abs(cam.Record.Dir)
		cams = append(cams, Camera{Name: name, CameraConfig: cam})
	}
	for _, raw := range c.Sources {
		cam := c.cameraDefaults()
		cam.URL = sourcePath(raw, abs)
		cams = append(cams, Camera{Name: StreamName(raw, names), CameraConfig: cam})
	}
	if len(c.Cameras) > 0 && len(cams) == 0 && len(c.Sources) == 0 {
		return nil, fmt.Errorf("%w: every camera is disabled (enabled: false)", ErrConfig)
	}
	return cams, nil
}

// sourcePath makes a relative file path absolute; URLs stay as they are.
func sourcePath(raw string, abs func(string) string) string {
	if strings.Contains(raw, "://") {
		return raw
	}
	return abs(raw)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// StreamName derives a short, URL-safe name from a source that is not yet
// in taken, and adds it there.
func StreamName(raw string, taken map[string]bool) string {
	base := raw
	if i := strings.Index(base, "?"); i >= 0 && strings.Contains(base, "://") {
		base = base[:i] // a query (tokens) is no part of a name
	}
	if i := strings.LastIndexAny(base, "/\\"); i >= 0 && i < len(base)-1 {
		base = base[i+1:]
	}
	base = strings.TrimSuffix(base, filepath.Ext(base))
	base = strings.Trim(unsafeName.ReplaceAllString(base, "-"), "-")
	if base == "" {
		base = "stream"
	}
	name := base
	for n := 2; taken[name]; n++ {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	taken[name] = true
	return name
}

// DefaultBundleDir is the bundled default model's folder below the project
// root (or an install prefix's share/htcstream).
const DefaultBundleDir = "examples/models/" + models.DefaultName

// DefaultBundle finds the bundled default model: beside the executable
// (bin/htcstream in the project, or an install prefix's
// share/htcstream/models), then in the working directory or above it (a
// checkout, where a retrained model replaces the shipped one), and else the
// copy embedded in the binary, unpacked once into the data folder
// (install.DataDir): a binary from `go install` or copied anywhere has it.
func DefaultBundle() (string, error) {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		prefix := filepath.Dir(filepath.Dir(exe))
		dirs = append(dirs, filepath.Join(prefix, DefaultBundleDir),
			filepath.Join(prefix, "share", "htcstream", "models", models.DefaultName))
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			dirs = append(dirs, filepath.Join(dir, DefaultBundleDir))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "manifest.yaml")); err == nil {
			return d, nil
		}
	}
	d, err := install.UnpackBundle(models.Default(), models.DefaultName)
	if err != nil {
		return "", fmt.Errorf("%w: no --model given and the embedded default model could not be unpacked: %v", ErrConfig, err)
	}
	return d, nil
}

// Validate reports every bad value at once.
func (c RunConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, _, err := infer.ParseProvider(c.Model.Provider); err != nil {
		bad("model.provider %q: want cpu, cuda[:N] or tensorrt[:N] (N: the GPU's index)", c.Model.Provider)
	}
	if err := cascade.EnsembleMode(c.Model.Ensemble).Validate(); err != nil {
		bad("model.%v", err)
	}
	for _, st := range c.Model.Stages {
		if st < 1 {
			bad("model.stages %v: stages count from 1", c.Model.Stages)
			break
		}
	}
	if err := CheckThreads(c.Model.Threads); err != nil {
		bad("model.%v", err)
	}
	checkThreshold := func(key string, v float64) {
		if !(v >= 0 && v < 1) { // NaN too: it compares false to everything
			bad("%s %v: want 0 <= t < 1", key, v)
		}
	}
	checkThreshold("model.score_threshold", c.Model.ScoreThreshold)
	if c.Batch.Size < 1 {
		bad("batch.size %d: want at least 1", c.Batch.Size)
	}
	if c.Batch.Deadline < 0 {
		bad("batch.deadline %v is negative", c.Batch.Deadline)
	}
	checkFilter := func(prefix string, f FilterConfig) {
		for label, v := range f.Thresholds {
			checkThreshold(fmt.Sprintf("%sthresholds.%s", prefix, label), v)
		}
		if !(f.MinArea >= 0) {
			bad("%smin_area %v is negative", prefix, f.MinArea)
		}
	}
	checkFilter("filter.", c.Filter)
	checkOverlay := func(prefix string, o OverlayConfig) {
		if err := o.style().Validate(); err != nil {
			bad("%s%v", prefix, err)
		}
		if !(o.StuffTint >= 0 && o.StuffTint <= 1) {
			bad("%sstuff_tint %v: want 0..1", prefix, o.StuffTint)
		}
	}
	checkOverlay("overlay.", c.Overlay)
	if err := encode.Codec(c.WebRTC.Codec).Validate(); err != nil {
		bad("webrtc.%v", err)
	}
	if c.WebRTC.UDPPortMax < c.WebRTC.UDPPortMin {
		bad("webrtc.udp_port_max %d is below udp_port_min %d", c.WebRTC.UDPPortMax, c.WebRTC.UDPPortMin)
	}
	checkLive := func(prefix string, l LiveConfig) {
		if err := decode.CheckHWDecode(l.HWDecode); err != nil {
			bad("%shw_decode: %v", prefix, err)
		}
		if err := ingest.CheckTransport(l.Transport); err != nil {
			bad("%s%v", prefix, err)
		}
		for _, d := range []struct {
			name string
			v    time.Duration
		}{{"open_timeout", l.OpenTimeout}, {"read_timeout", l.ReadTimeout}, {"max_backoff", l.MaxBackoff}} {
			if d.v <= 0 {
				bad("%s%s %v: want a positive duration", prefix, d.name, d.v)
			}
		}
	}
	checkLive("live.", c.Live)
	checkSchedule := func(prefix string, cam CameraConfig) {
		// the source's kind is known only when it opens: a live camera
		// with timing smooth and no interval is refused then
		if err := cam.Schedule(false).validate(); err != nil {
			bad("%s%s", prefix, strings.TrimPrefix(err.Error(), ErrConfig.Error()+": "))
		}
		if err := cam.Motion.Config.Validate(); err != nil {
			bad("%smotion: %v", prefix, err)
		}
		if cam.Motion.MaxInterval < 0 {
			bad("%smotion.max_interval %v is negative", prefix, cam.Motion.MaxInterval)
		}
	}
	checkSchedule("", c.cameraDefaults())
	for _, name := range slices.Sorted(maps.Keys(c.Cameras)) {
		cam := c.Cameras[name]
		p := "cameras." + name + "."
		if !validCameraName.MatchString(name) {
			bad("cameras.%s: a camera name is letters, digits, _ and - (it is part of URLs and topics)", name)
		}
		if cam.URL == "" {
			bad("%surl is missing", p)
		}
		checkThreshold(p+"score_threshold", cam.ScoreThreshold)
		checkFilter(p, cam.FilterConfig)
		checkOverlay(p+"overlay.", cam.Overlay)
		checkLive(p+"live.", cam.Live)
		checkRules(bad, p+"events.", cam.Events, cam.Zones, true)
		checkZones(bad, p+"zones.", cam.Zones)
		checkSchedule(p, cam)
		if cam.ZoneOverlap < 0 || cam.ZoneOverlap > 1 {
			bad("%szone_overlap %v: want 0 (the box's bottom centre) or a share of the mask, up to 1", p, cam.ZoneOverlap)
		}
		cam.Record.check(bad, p+"record.")
	}
	c.validateEvents(bad)
	c.Record.check(bad, "record.")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

var validCameraName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
