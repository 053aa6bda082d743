package cascade

import (
	"math/rand"
	"testing"
)

// BenchmarkProposals decodes RPN outputs of a 320x320 input (P2..P6, three
// anchors a location) as the tiny preset's test config does: the Go step
// that runs once per view.
func BenchmarkProposals(b *testing.B) {
	cfg := AnchorConfig{Strides: []int{4, 8, 16, 32, 64}, Scales: []float64{8}, Ratios: []float64{0.5, 1, 2}}
	g := NewAnchorGrids(cfg)
	rng := rand.New(rand.NewSource(1))
	var levels []RPNLevel
	for _, s := range cfg.Strides {
		h, w := 320/s, 320/s
		lv := RPNLevel{H: h, W: w, Objectness: make([]float32, 3*h*w), Deltas: make([]float32, 12*h*w)}
		for i := range lv.Objectness {
			lv.Objectness[i] = float32(rng.NormFloat64() * 3)
		}
		for i := range lv.Deltas {
			lv.Deltas[i] = float32(rng.NormFloat64() * 0.3)
		}
		levels = append(levels, lv)
	}
	rpn := RPNConfig{NMSPre: 500, NMSIoU: 0.7, MaxProposals: 500, DeltaClip: DefaultDeltaClip}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Proposals(g, levels, rpn, 320, 320); err != nil {
			b.Fatal(err)
		}
	}
}
