package cascade

import (
	"fmt"
	"math"
)

// EnsembleMode says how the cascade stages' class scores are combined.
type EnsembleMode string

const (
	// EnsembleLogits: softmax of the weighted mean of the stages' logits,
	// as mmdetection's HTC and Cascade R-CNN test (the paper's numbers).
	EnsembleLogits EnsembleMode = "logits"
	// EnsembleProbs: weighted mean of each stage's softmax, as detectron2's
	// Cascade R-CNN does.
	EnsembleProbs EnsembleMode = "probs"
)

// Validate accepts the two modes.
func (m EnsembleMode) Validate() error {
	if m != EnsembleLogits && m != EnsembleProbs {
		return fmt.Errorf("ensemble mode %q: want %s or %s", m, EnsembleLogits, EnsembleProbs)
	}
	return nil
}

// Ensemble combines per-stage class logits into one probability row per RoI.
type Ensemble struct {
	Mode EnsembleMode
	// Weights per stage; nil means equal weights.
	Weights []float32
}

// Validate checks the mode and that the weights fit t stages.
func (e Ensemble) Validate(t int) error {
	if err := e.Mode.Validate(); err != nil {
		return err
	}
	if e.Weights == nil {
		return nil
	}
	if len(e.Weights) != t {
		return fmt.Errorf("ensemble: %d stage weights for %d stages", len(e.Weights), t)
	}
	var sum float32
	for _, w := range e.Weights {
		if w < 0 || w != w {
			return fmt.Errorf("ensemble: stage weight %v is not a non-negative number", w)
		}
		sum += w
	}
	if sum == 0 {
		return fmt.Errorf("ensemble: stage weights sum to zero")
	}
	return nil
}

// Scores turns stage logits laid out [R][T][K] into probabilities [R][K].
// dst must hold R*K values.
func (e Ensemble) Scores(logits []float32, r, t, k int, dst []float32) {
	w := e.Weights
	if w == nil {
		w = make([]float32, t)
		for i := range w {
			w[i] = 1
		}
	}
	var wsum float32
	for _, v := range w {
		wsum += v
	}
	tmp := make([]float32, k)
	for i := 0; i < r; i++ {
		out := dst[i*k : (i+1)*k]
		clear(out)
		for s := 0; s < t; s++ {
			row := logits[(i*t+s)*k : (i*t+s+1)*k]
			if e.Mode == EnsembleProbs {
				softmax(row, tmp)
				for c := range out {
					out[c] += w[s] * tmp[c]
				}
			} else {
				for c := range out {
					out[c] += w[s] * row[c]
				}
			}
		}
		for c := range out {
			out[c] /= wsum
		}
		if e.Mode == EnsembleLogits {
			copy(tmp, out)
			softmax(tmp, out)
		}
	}
}

// softmax writes softmax(x) to dst, computed in float64 and stable for
// large logits.
func softmax(x, dst []float32) {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v) - m)
		dst[i] = float32(e)
		sum += e
	}
	for i := range dst {
		dst[i] = float32(float64(dst[i]) / sum)
	}
}
