package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// RunConfig is the configuration of `htcstream run` (configs/pipeline/
// default.yaml spells out every default).
type RunConfig struct {
	Model struct {
		Bundle         string    `yaml:"bundle"`
		Provider       string    `yaml:"provider"`
		Threads        int       `yaml:"threads"`
		TTAScales      [][2]int  `yaml:"tta_scales"`
		Flip           bool      `yaml:"flip"`
		Ensemble       string    `yaml:"ensemble"`
		StageWeights   []float32 `yaml:"stage_weights"`
		ScoreThreshold float64   `yaml:"score_threshold"`
	} `yaml:"model"`
	Batch struct {
		Size     int           `yaml:"size"`
		Deadline time.Duration `yaml:"deadline"`
	} `yaml:"batch"`
	Sources []string `yaml:"sources"`
	Loop    bool     `yaml:"loop"`
	Outputs struct {
		Video      string `yaml:"video"`
		Detections string `yaml:"detections"`
		Serve      string `yaml:"serve"`
	} `yaml:"outputs"`
	Overlay struct {
		Alpha   float32 `yaml:"alpha"`
		ColorBy string  `yaml:"color_by"`
		Contour bool    `yaml:"contour"`
		Boxes   bool    `yaml:"boxes"`
		Labels  bool    `yaml:"labels"`
		HUD     bool    `yaml:"hud"`
		// StuffTint > 0 runs the semantic branch's map and tints stuff
		// regions at this opacity.
		StuffTint float32 `yaml:"stuff_tint"`
	} `yaml:"overlay"`
	WebRTC struct {
		Codec      string   `yaml:"codec"`
		ICEServers []string `yaml:"ice_servers"`
		UDPPortMin uint16   `yaml:"udp_port_min"`
		UDPPortMax uint16   `yaml:"udp_port_max"`
	} `yaml:"webrtc"`
	Live struct {
		// HWDecode: "", "cuda" or "vaapi" (falls back to software).
		HWDecode    string        `yaml:"hw_decode"`
		Transport   string        `yaml:"transport"`
		OpenTimeout time.Duration `yaml:"open_timeout"`
		ReadTimeout time.Duration `yaml:"read_timeout"`
		MaxBackoff  time.Duration `yaml:"max_backoff"`
	} `yaml:"live"`
}

// DefaultRunConfig is configs/pipeline/default.yaml's content.
func DefaultRunConfig() RunConfig {
	var c RunConfig
	c.Model.Bundle = "examples/models/htc_tiny_synthetic"
	c.Model.Provider = "cpu"
	c.Model.Ensemble = "logits"
	c.Model.ScoreThreshold = 0.3
	c.Batch.Size = 1
	c.Batch.Deadline = 20 * time.Millisecond
	c.Overlay.Alpha = 0.5
	c.Overlay.ColorBy = "class"
	c.Overlay.Contour, c.Overlay.Boxes, c.Overlay.Labels, c.Overlay.HUD = true, true, true, true
	c.WebRTC.Codec = "h264"
	c.Live.Transport = "tcp"
	c.Live.OpenTimeout = 10 * time.Second
	c.Live.ReadTimeout = 5 * time.Second
	c.Live.MaxBackoff = 10 * time.Second
	return c
}

// LoadRunConfig reads path over the defaults; unknown keys and bad values
// are errors naming the file.
func LoadRunConfig(path string) (RunConfig, error) {
	c := DefaultRunConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	// An empty file (io.EOF) means all defaults.
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %v", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every bad value at once.
func (c RunConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Model.Provider {
	case "cpu", "cuda", "tensorrt":
	default:
		bad("model.provider %q: want cpu, cuda or tensorrt", c.Model.Provider)
	}
	switch c.Model.Ensemble {
	case "logits", "probs":
	default:
		bad("model.ensemble %q: want logits or probs", c.Model.Ensemble)
	}
	for _, s := range c.Model.TTAScales {
		if s[0] <= 0 || s[1] <= 0 {
			bad("model.tta_scales: %v is not a [long, short] pair of positive sizes", s)
		}
	}
	if c.Model.Threads < 0 {
		bad("model.threads %d is negative", c.Model.Threads)
	}
	if c.Model.ScoreThreshold < 0 || c.Model.ScoreThreshold >= 1 {
		bad("model.score_threshold %v: want 0 <= t < 1", c.Model.ScoreThreshold)
	}
	if c.Batch.Size < 1 {
		bad("batch.size %d: want at least 1", c.Batch.Size)
	}
	if c.Batch.Deadline < 0 {
		bad("batch.deadline %v is negative", c.Batch.Deadline)
	}
	if c.Overlay.Alpha < 0 || c.Overlay.Alpha > 1 {
		bad("overlay.alpha %v: want 0..1", c.Overlay.Alpha)
	}
	if c.Overlay.StuffTint < 0 || c.Overlay.StuffTint > 1 {
		bad("overlay.stuff_tint %v: want 0..1", c.Overlay.StuffTint)
	}
	switch c.Overlay.ColorBy {
	case "class", "instance":
	default:
		bad("overlay.color_by %q: want class or instance", c.Overlay.ColorBy)
	}
	switch c.WebRTC.Codec {
	case "h264", "vp8":
	default:
		bad("webrtc.codec %q: want h264 or vp8", c.WebRTC.Codec)
	}
	if c.WebRTC.UDPPortMax < c.WebRTC.UDPPortMin {
		bad("webrtc.udp_port_max %d is below udp_port_min %d", c.WebRTC.UDPPortMax, c.WebRTC.UDPPortMin)
	}
	switch c.Live.HWDecode {
	case "", "cuda", "vaapi":
	default:
		bad("live.hw_decode %q: want cuda, vaapi or empty (software)", c.Live.HWDecode)
	}
	switch c.Live.Transport {
	case "tcp", "udp":
	default:
		bad("live.transport %q: want tcp or udp", c.Live.Transport)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"live.open_timeout", c.Live.OpenTimeout}, {"live.read_timeout", c.Live.ReadTimeout}, {"live.max_backoff", c.Live.MaxBackoff}} {
		if d.v <= 0 {
			bad("%s %v: want a positive duration", d.name, d.v)
		}
	}
	return errors.Join(errs...)
}
