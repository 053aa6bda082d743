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

// views turns --tta and --flip into a TTA plan over the given default
// scale; nil means the bundle's default single view.
func (m *modelFlags) views(def infer.Scale) ([]infer.View, error) {
	if m.tta == "" && !m.flip {
		return nil, nil
	}
	scales := []infer.Scale{def}
	if m.tta != "" {
		scales = nil
		for _, s := range strings.Split(m.tta, ",") {
			sc, err := parseScale(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("%w: --tta: %v", errUsage, err)
			}
			scales = append(scales, sc)
		}
	}
	var views []infer.View
	for _, s := range scales {
		views = append(views, infer.View{Scale: s})
		if m.flip {
			views = append(views, infer.View{Scale: s, Flip: true})
		}
	}
	return views, nil
}

// load initialises ONNX Runtime, loads the bundle and prepares the model.
// The caller closes the bundle.
func (m *modelFlags) load() (*infer.Bundle, *cascade.Model, error) {
	ens := cascade.Ensemble{Mode: cascade.EnsembleMode(m.ensemble)}
	if m.weights != "" {
		for _, w := range strings.Split(m.weights, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(w), 32)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: --stage-weights %q: %v", errUsage, m.weights, err)
			}
			ens.Weights = append(ens.Weights, float32(v))
		}
	}
	lib, err := infer.FindLibrary(m.ortLib)
	if err != nil {
		return nil, nil, err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return nil, nil, err
	}
	b, err := infer.LoadBundle(m.bundle, infer.SessionOptions{Provider: infer.Provider(m.provider), IntraOpThreads: m.threads})
	if err != nil {
		return nil, nil, err
	}
	s := b.Manifest.Input.TestScales[0]
	views, err := m.views(infer.Scale{Long: max(s[0], s[1]), Short: min(s[0], s[1])})
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	md, err := cascade.NewModel(b, cascade.Options{Views: views, Ensemble: ens, ScoreThreshold: float32(m.threshold), Semantic: m.semantic})
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := md.WarmUp(); err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("%s: %w", m.bundle, err)
	}
	return b, md, nil
}
