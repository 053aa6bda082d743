package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/htcstream/htcstream/internal/install"
	"github.com/htcstream/htcstream/pipeline"
)

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
	stages    string
	threshold float64
	semantic  bool // compute the per-pixel semantic map
}

func (m *modelFlags) register(fs *pflag.FlagSet, threshold float64) {
	fs.StringVar(&m.bundle, "model", "", "model bundle directory (default: the bundled "+pipeline.DefaultBundleDir+", found beside the executable)")
	fs.StringVar(&m.ortLib, "ort-lib", "", pipeline.ORTLibHelp)
	fs.StringVar(&m.provider, "provider", "cpu", "execution provider: cpu, cuda[:N] or tensorrt[:N] (N: the GPU; needs a GPU build of ONNX Runtime "+install.Pinned().Version+" via --ort-lib, else an error)")
	fs.IntVar(&m.threads, "threads", 0, "intra-op threads per graph (0: the cores this process may use: affinity mask, cgroup CPU quota; at most four per core)")
	fs.StringVar(&m.tta, "tta", "", "test scales LONGxSHORT[,LONGxSHORT...] (default: the bundle's first test scale; several = multi-scale TTA)")
	fs.BoolVar(&m.flip, "flip", false, "add a horizontally flipped view of every scale (TTA)")
	fs.StringVar(&m.ensemble, "ensemble", "logits", "stage score ensemble: logits (mmdetection's HTC) or probs (detectron2's Cascade R-CNN)")
	fs.StringVar(&m.weights, "stage-weights", "", "comma-separated weight per cascade stage (default: equal)")
	fs.StringVar(&m.stages, "stages", "", "comma-separated cascade stages (1-based) whose scores and masks are used, e.g. 3 (stage-wise test, the HTC paper's Table 4; default: all)")
	fs.Float64Var(&m.threshold, "score-threshold", threshold, "drop detections scoring below this (0: the bundle's own, 0.001)")
}

// stageWeights parses --stage-weights.
func (m *modelFlags) stageWeights() ([]float32, error) {
	var out []float32
	if m.weights == "" {
		return nil, nil
	}
	for _, w := range strings.Split(m.weights, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(w), 32)
		if err != nil {
			return nil, fmt.Errorf("%w: --stage-weights %q: %v", errUsage, m.weights, err)
		}
		out = append(out, float32(v))
	}
	return out, nil
}

// stageList parses --stages.
func (m *modelFlags) stageList() ([]int, error) {
	if m.stages == "" {
		return nil, nil
	}
	var out []int
	for _, s := range strings.Split(m.stages, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%w: --stages %q: %v", errUsage, m.stages, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// spec is the model the flags name.
func (m *modelFlags) spec() (pipeline.ModelSpec, error) {
	s := pipeline.ModelSpec{Bundle: m.bundle, ORTLib: m.ortLib, Provider: m.provider, Threads: m.threads, Flip: m.flip,
		Threshold: float32(m.threshold), Semantic: m.semantic}
	var err error
	if err := pipeline.CheckThreads(m.threads); err != nil {
		return s, fmt.Errorf("%w: --%v", errUsage, err)
	}
	if !(m.threshold >= 0 && m.threshold < 1) { // NaN too
		return s, fmt.Errorf("%w: --score-threshold %v: want 0 <= t < 1", errUsage, m.threshold)
	}
	if err := pipeline.CheckProvider(m.provider); err != nil {
		return s, fmt.Errorf("%w: --provider: %v", errUsage, err)
	}
	if s.Scales, err = pipeline.ParseTTA(m.tta); err != nil {
		return s, fmt.Errorf("%w: --tta: %v", errUsage, err)
	}
	weights, err := m.stageWeights()
	if err != nil {
		return s, err
	}
	s.Ensemble = pipeline.NewEnsemble(m.ensemble, weights)
	if s.Stages, err = m.stageList(); err != nil {
		return s, err
	}
	if s.Bundle == "" {
		if s.Bundle, err = pipeline.DefaultBundle(); err != nil {
			return s, err
		}
	}
	return s, nil
}
