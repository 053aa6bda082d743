package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/htcstream/htcstream/pipeline"
)

// runCmd reads the flags into one pipeline.RunConfig (over --config's
// file) and hands it to pipeline.Execute, which assembles the run.
func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [flags] [SOURCE...]   (flags and sources in any order)", stderr)
	configPath := fs.String("config", "", "YAML configuration, with named cameras (configs/pipeline/*.yaml); flags override it")
	def := pipeline.DefaultRunConfig()
	var mf modelFlags
	mf.register(fs, def.Model.ScoreThreshold)
	batch := fs.Int("batch", def.Batch.Size, "frames per inference batch, shared by all streams")
	batchWait := fs.Duration("batch-wait", def.Batch.Deadline, "longest wait for a batch to fill")
	out := fs.String("out", "", "write the annotated video here (.mp4; NAME-<camera>.mp4 with several cameras)")
	dets := fs.String("detections", "", "write detections here as JSON lines ('-': standard output; the summary then goes to standard error)")
	serve := fs.String("serve", "", "serve the browser preview, WHEP and /metrics on this address (a bare :PORT is 127.0.0.1:PORT)")
	token := fs.String("token", "", "bearer token for the preview's API (default $HTCSTREAM_TOKEN); needed to serve beyond this machine")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key)")
	tlsKey := fs.String("tls-key", "", "the PEM key of --tls-cert")
	insecure := fs.Bool("insecure", false, "serve a non-loopback address without a token: anyone who reaches it sees every camera")
	loop := fs.Bool("loop", def.Loop, "start file sources again at their end, to keep a preview serving")
	codec := fs.String("codec", def.WebRTC.Codec, "browser preview codec: h264 or vp8")
	stuff := fs.Float64("stuff-tint", float64(def.Overlay.StuffTint), "tint stuff regions (sky, grass...) from the semantic branch at this opacity (0: off)")
	transport := fs.String("rtsp-transport", def.Live.Transport, "RTSP transport: tcp or udp")
	hwDecode := fs.String("hw-decode", def.Live.HWDecode, "hardware decoding: cuda or vaapi (falls back to software with a log line)")
	maxFrames := fs.Int("max-frames", 0, "stop each source after this many frames (0: no limit)")
	interval := fs.String("interval", "", "how often the model sees a camera's frames: auto (the newest frame whenever the model is free; live sources' default) or N (every Nth frame; files' default 1); the tracker carries the masks to the other frames")
	timing := fs.String("timing", "", "frames between keyframes: live (drawn at once with the latest tracks; live sources' default) or smooth (held up to one interval, interpolated; files' default)")
	prop := fs.String("propagation", "", "how objects move on the frames the model skips: flow (optical flow on each object's region; the default) or box (the tracker's prediction, or a straight line between keyframes)")
	motionOn := fs.Bool("motion", false, "skip the model while nothing moves (default: on for live sources, off for files; --motion=false turns it off)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := def
	if *configPath != "" {
		var err error
		if cfg, err = pipeline.LoadRunConfig(*configPath); err != nil {
			return err
		}
	}
	set := func(name string, apply func()) {
		if fs.Changed(name) {
			apply()
		}
	}
	var flagErr error
	set("model", func() { cfg.Model.Bundle = absPath(mf.bundle) })
	set("provider", func() { cfg.Model.Provider = mf.provider })
	set("threads", func() { cfg.Model.Threads = mf.threads })
	set("flip", func() { cfg.Model.Flip = mf.flip })
	set("ensemble", func() { cfg.Model.Ensemble = mf.ensemble })
	set("score-threshold", func() { cfg.Model.ScoreThreshold = mf.threshold })
	set("tta", func() {
		var err error
		if cfg.Model.TTAScales, err = pipeline.ParseTTA(mf.tta); err != nil {
			flagErr = fmt.Errorf("%w: --tta: %v", errUsage, err)
		}
	})
	set("stage-weights", func() {
		if w, err := mf.stageWeights(); err != nil {
			flagErr = err
		} else {
			cfg.Model.StageWeights = w
		}
	})
	set("stages", func() {
		if st, err := mf.stageList(); err != nil {
			flagErr = err
		} else {
			cfg.Model.Stages = st
		}
	})
	set("batch", func() { cfg.Batch.Size = *batch })
	set("batch-wait", func() { cfg.Batch.Deadline = *batchWait })
	set("out", func() { cfg.Outputs.Video = absPath(*out) })
	set("detections", func() { cfg.Outputs.Detections = absPath(*dets) })
	set("serve", func() { cfg.Outputs.Serve = *serve })
	set("token", func() { cfg.Server.Token = *token })
	set("tls-cert", func() { cfg.Server.TLSCert = absPath(*tlsCert) })
	set("tls-key", func() { cfg.Server.TLSKey = absPath(*tlsKey) })
	set("insecure", func() { cfg.Server.Insecure = *insecure })
	set("loop", func() { cfg.Loop = *loop })
	set("codec", func() { cfg.WebRTC.Codec = *codec })
	set("stuff-tint", func() { cfg.Overlay.StuffTint = float32(*stuff) })
	set("rtsp-transport", func() { cfg.Live.Transport = *transport })
	set("hw-decode", func() { cfg.Live.HWDecode = *hwDecode })
	set("interval", func() {
		if iv, err := pipeline.ParseInterval(*interval); err != nil {
			flagErr = err
		} else {
			cfg.Interval = iv
		}
	})
	set("timing", func() { cfg.Timing = pipeline.Timing(*timing) })
	set("propagation", func() { cfg.Propagation = pipeline.Propagation(*prop) })
	set("motion", func() {
		on := *motionOn
		cfg.Motion.Enabled = &on
	})
	if flagErr != nil {
		return flagErr
	}
	if cfg.Server.Token == "" {
		cfg.Server.Token = os.Getenv("HTCSTREAM_TOKEN")
	}
	for _, src := range fs.Args() {
		if !strings.Contains(src, "://") {
			src = absPath(src) // the command line's paths are the working directory's
		}
		cfg.Sources = append(cfg.Sources, src)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.Sources) == 0 && len(cfg.Cameras) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: no SOURCE given (a URL, a path, or cameras in --config)", errUsage)
	}
	opt := pipeline.Options{ORTLib: mf.ortLib, MaxFrames: *maxFrames, Stdout: stdout, Stderr: stderr, Version: version}
	if cfg.Outputs.Detections == "-" {
		// standard output carries the detections; everything else is said on stderr
		opt.Stdout = stderr
	}
	return pipeline.Execute(cfg, opt)
}

// absPath makes a command-line path absolute against the working directory
// (a config file's paths are against its folder); "-" stays.
func absPath(p string) string {
	if p == "" || p == "-" {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
