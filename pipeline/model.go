package pipeline

import (
	"fmt"
	"runtime"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/infer"
)

// ModelSpec is a model choice: the bundle, where it runs and how it tests.
// run, eval and bench all load their model through it.
type ModelSpec struct {
	Bundle, ORTLib, Provider string
	Threads                  int
	// Scales are the test scales; nil: the bundle's first.
	Scales   []infer.Scale
	Flip     bool
	Ensemble cascade.Ensemble
	// Stages (1-based) whose scores and masks are used; nil: all
	// (cascade.Options.Stages).
	Stages    []int
	Threshold float32
	// Semantic computes the per-pixel semantic map (stuff tint, stuff regions).
	Semantic bool
}

// NewEnsemble is the stage score ensemble mode names ("logits" or
// "probs"; the model checks it) with a weight per stage (nil: equal).
func NewEnsemble(mode string, weights []float32) cascade.Ensemble {
	return cascade.Ensemble{Mode: cascade.EnsembleMode(mode), Weights: weights}
}

// Views is the TTA plan: every scale, each also flipped with Flip; nil (the
// bundle's default single view) when neither scales nor flip are asked for.
func (s ModelSpec) Views(def infer.Scale) []infer.View {
	if len(s.Scales) == 0 && !s.Flip {
		return nil
	}
	scales := s.Scales
	if len(scales) == 0 {
		scales = []infer.Scale{def}
	}
	var views []infer.View
	for _, sc := range scales {
		views = append(views, infer.View{Scale: sc})
		if s.Flip {
			views = append(views, infer.View{Scale: sc, Flip: true})
		}
	}
	return views
}

// CheckThreads refuses an intra-op thread count no machine profits from:
// ONNX Runtime starts that many threads for each of the bundle's graphs
// before it answers, so --threads 100000 once sat silent for two minutes
// growing to 5.6 GB. Beyond MaxThreads() (four per core) threads only
// take turns on the same cores.
func CheckThreads(n int) error {
	if n < 0 || n > MaxThreads() {
		return fmt.Errorf("threads %d: want 0 (the cores this process may use) to %d (four per core of this machine's %d)", n, MaxThreads(), runtime.NumCPU())
	}
	return nil
}

// MaxThreads is the most intra-op threads CheckThreads allows.
func MaxThreads() int { return 4 * runtime.NumCPU() }

// OpenBundle initialises ONNX Runtime and loads the bundle's graphs. The
// caller closes the bundle.
func (s ModelSpec) OpenBundle() (*infer.Bundle, error) {
	if err := CheckThreads(s.Threads); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	lib, err := infer.FindLibrary(s.ORTLib)
	if err != nil {
		return nil, err
	}
	if err := infer.InitRuntime(lib); err != nil {
		return nil, err
	}
	// before any graph: a provider the library cannot give is one line
	// about the provider, not about the bundle
	if err := infer.CheckProvider(infer.Provider(s.Provider)); err != nil {
		return nil, err
	}
	return infer.LoadBundle(s.Bundle, infer.SessionOptions{Provider: infer.Provider(s.Provider), IntraOpThreads: s.Threads})
}

// NewModel prepares the test procedure on an open bundle and warms it up;
// several models (cameras with their own views) may share one bundle. Options
// the bundle cannot take are ErrConfig errors.
func (s ModelSpec) NewModel(b *infer.Bundle) (*cascade.Model, error) {
	views := s.Views(b.Manifest.DefaultScale())
	md, err := cascade.NewModel(b, cascade.Options{Views: views, Ensemble: s.Ensemble, Stages: s.Stages, ScoreThreshold: s.Threshold, Semantic: s.Semantic})
	if err != nil {
		// what was asked of the model (views, stages, weights) does not
		// fit this bundle: the user's to change
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := md.WarmUp(); err != nil {
		return nil, fmt.Errorf("%s: %w", s.Bundle, err)
	}
	return md, nil
}

// Load opens the bundle and prepares one model on it. The caller closes
// the bundle.
func (s ModelSpec) Load() (*infer.Bundle, *cascade.Model, error) {
	b, err := s.OpenBundle()
	if err != nil {
		return nil, nil, err
	}
	md, err := s.NewModel(b)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, md, nil
}
