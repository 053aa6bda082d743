package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/infer"
)

// defaultModel is the bundled default model, relative to the project root.
const defaultModel = "examples/models/htc_tiny_synthetic"

// modelFlags are the flags every command that runs the model shares.
type modelFlags struct {
	bundle    string
	ortLib    string
	provider  string
	threads   int
	tta       string
	flip      bool
	ensemble  string
	weights   string
	threshold float64
	semantic  bool // compute the per-pixel semantic map
}

func (m *modelFlags) register(fs *flag.FlagSet, threshold float64) {
	fs.StringVar(&m.bundle, "model", defaultModel, "model bundle directory")
	fs.StringVar(&m.ortLib, "ort-lib", "", "ONNX Runtime shared library (default: $"+infer.LibraryEnv+", then "+infer.ProjectLibrary+")")
	fs.StringVar(&m.provider, "provider", "cpu", "execution provider: cpu, cuda or tensorrt (falls back to cpu with a log line)")
	fs.IntVar(&m.threads, "threads", 0, "intra-op threads per graph (0: one per core)")
	fs.StringVar(&m.tta, "tta", "", "test scales LONGxSHORT[,LONGxSHORT...] (default: the bundle's first test scale; several = multi-scale TTA)")
	fs.BoolVar(&m.flip, "flip", false, "add a horizontally flipped view of every scale (TTA)")
	fs.StringVar(&m.ensemble, "ensemble", "logits", "stage score ensemble: logits (mmdetection's HTC) or probs (detectron2's Cascade R-CNN)")
	fs.StringVar(&m.weights, "stage-weights", "", "comma-separated weight per cascade stage (default: equal)")
	fs.Float64Var(&m.threshold, "score-threshold", threshold, "drop detections scoring below this (0: the bundle's own, 0.001)")
}

// modelSpec is a model choice in parsed form, from flags (modelFlags.spec)
// or from a pipeline config (run).
type modelSpec struct {
	bundle, ortLib, provider string
	threads                  int
	// scales are the test scales; nil: the bundle's first.
	scales    []infer.Scale
	flip      bool
	ensemble  cascade.Ensemble
	threshold float32
	semantic  bool
}

// spec parses the flags' lists (--tta, --stage-weights).
func (m *modelFlags) spec() (modelSpec, error) {
	s := modelSpec{bundle: m.bundle, ortLib: m.ortLib, provider: m.provider, threads: m.threads, flip: m.flip,
		ensemble: cascade.Ensemble{Mode: cascade.EnsembleMode(m.ensemble)}, threshold: float32(m.threshold), semantic: m.semantic}
	if m.tta != "" {
		for _, t := range strings.Split(m.tta, ",") {
			sc, err := parseScale(strings.TrimSpace(t))
			if err != nil {
				return modelSpec{}, fmt.Errorf("%w: --tta: %v", errUsage, err)
			}
			s.scales = append(s.scales, sc)
		}
	}
	if m.weights != "" {
		for _, w := range strings.Split(m.weights, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(w), 32)
			if err != nil {
				return modelSpec{}, fmt.Errorf("%w: --stage-weights %q: %v", errUsage, m.weights, err)
			}
			s.ensemble.Weights = append(s.ensemble.Weights, float32(v))
		}
	}
	return s, nil
}

// load loads the model the flags name; see modelSpec.load.
func (m *modelFlags) load() (*infer.Bundle, *cascade.Model, error) {
	s, err := m.spec()
	if err != nil {
		return nil, nil, err
	}
	return s.load()
}

// views is the TTA plan: every scale, each also flipped with flip; nil (the
// bundle's default single view) when neither scales nor flip are asked for.
func (s modelSpec) views(def infer.Scale) []infer.View {
	if len(s.scales) == 0 && !s.flip {
		return nil
	}
	scales := s.scales
	if len(scales) == 0 {
		scales = []infer.Scale{def}
	}
	var views []infer.View
	for _, sc := range scales {
		views = append(views, infer.View{Scale: sc})
		if s.flip {
			views = append(views, infer.View{Scale: sc, Flip: true})
		}
	}
	return views
}

// load initialises ONNX Runtime, loads the bundle and prepares the model.
// The caller closes the bundle.
func (s modelSpec) load() (*infer.Bundle, *cascade.Model, error) {
	lib, err := infer.FindLibrary(s.ortLib)
	if err != nil {
		return nil, nil, err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return nil, nil, err
	}
	b, err := infer.LoadBundle(s.bundle, infer.SessionOptions{Provider: infer.Provider(s.provider), IntraOpThreads: s.threads})
	if err != nil {
		return nil, nil, err
	}
	ts := b.Manifest.Input.TestScales[0]
	views := s.views(infer.Scale{Long: max(ts[0], ts[1]), Short: min(ts[0], ts[1])})
	md, err := cascade.NewModel(b, cascade.Options{Views: views, Ensemble: s.ensemble, ScoreThreshold: s.threshold, Semantic: s.semantic})
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := md.WarmUp(); err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("%s: %w", s.bundle, err)
	}
	return b, md, nil
}
