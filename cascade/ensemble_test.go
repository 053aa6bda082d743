package cascade

import (
	"math"
	"math/rand"
	"sort"
	"testing"

	"github.com/htcstream/htcstream/detection"
)

func TestEnsembleModes(t *testing.T) {
	// One RoI, two stages, three columns (two classes + background).
	logits := []float32{
		2, 0, 0, // stage 0
		0, 2, 0, // stage 1
	}
	got := make([]float32, 3)
	Ensemble{Mode: EnsembleLogits}.Scores(logits, 1, 2, 3, got)
	// mean logits (1, 1, 0) -> softmax: e/(2e+1), e/(2e+1), 1/(2e+1).
	e := math.E
	want := []float64{e / (2*e + 1), e / (2*e + 1), 1 / (2*e + 1)}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-6 {
			t.Fatalf("logits mode: %v, want %v", got, want)
		}
	}
	Ensemble{Mode: EnsembleProbs}.Scores(logits, 1, 2, 3, got)
	// each stage's softmax: (e²,1,1)/(e²+2) and (1,e²,1)/(e²+2); mean.
	e2 := e * e
	want = []float64{(e2 + 1) / 2 / (e2 + 2), (e2 + 1) / 2 / (e2 + 2), 1 / (e2 + 2)}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-6 {
			t.Fatalf("probs mode: %v, want %v", got, want)
		}
	}
	// Weight only stage 1: its softmax alone.
	Ensemble{Mode: EnsembleLogits, Weights: []float32{0, 1}}.Scores(logits, 1, 2, 3, got)
	if math.Abs(float64(got[1])-e2/(e2+2)) > 1e-6 {
		t.Fatalf("weighted: %v", got)
	}
	// Huge logits stay finite.
	Ensemble{Mode: EnsembleLogits}.Scores([]float32{1e30, 0, 0, 1e30, 0, 0}, 1, 2, 3, got)
	if got[0] != 1 || got[1] != 0 {
		t.Fatalf("huge logits: %v", got)
	}
}

func TestEnsembleValidate(t *testing.T) {
	for _, e := range []Ensemble{{Mode: "median"}, {Mode: EnsembleLogits, Weights: []float32{1}}, {Mode: EnsembleProbs, Weights: []float32{0, 0, 0}},
		{Mode: EnsembleLogits, Weights: []float32{1, -1, 1}}, {Mode: EnsembleLogits, Weights: []float32{1, float32(math.NaN()), 1}}} {
		if e.Validate(3) == nil {
			t.Errorf("%+v must be invalid for 3 stages", e)
		}
	}
	if err := (Ensemble{Mode: EnsembleLogits, Weights: []float32{1, 0.5, 0.25}}).Validate(3); err != nil {
		t.Fatal(err)
	}
}

func TestSelectDetections(t *testing.T) {
	boxes := []detection.Box{{X1: 0, Y1: 0, X2: 10, Y2: 10}, {X1: 1, Y1: 1, X2: 11, Y2: 11}, {X1: 50, Y1: 50, X2: 60, Y2: 60}, {X1: 0, Y1: 0, X2: float32(math.NaN()), Y2: 5}}
	// Columns: class 0, class 1, background.
	probs := []float32{
		0.8, 0.1, 0.1,
		0.7, 0.25, 0.05, // overlaps box 0: suppressed for class 0, kept for class 1
		0.0005, 0.9, 0.0995, // class 0 below threshold
		0.99, 0, 0.01, // NaN box: never a detection
	}
	got, rois := SelectDetections(boxes, probs, 3, DetectConfig{ScoreThreshold: 0.001, NMSIoU: 0.5, MaxPerImage: 100})
	type d struct {
		roi, label int
		score      float32
	}
	// Box 0 class 1 (0.1) overlaps box 1 class 1 (0.25) with IoU 81/119: suppressed.
	want := []d{{2, 1, 0.9}, {0, 0, 0.8}, {1, 1, 0.25}}
	if len(got) != len(want) {
		t.Fatalf("got %d detections: %+v", len(got), got)
	}
	for i, w := range want {
		if rois[i] != w.roi || got[i].Label != w.label || got[i].Score != w.score {
			t.Errorf("detection %d: %+v, want %+v", i, got[i], w)
		}
	}
	if got, _ := SelectDetections(boxes, probs, 3, DetectConfig{ScoreThreshold: 0.001, NMSIoU: 0.5, MaxPerImage: 2}); len(got) != 2 || got[0].Score != 0.9 {
		t.Fatalf("max per image 2: %+v", got)
	}
	if got, _ := SelectDetections(nil, nil, 3, DetectConfig{ScoreThreshold: 0.001, NMSIoU: 0.5, MaxPerImage: 100}); len(got) != 0 {
		t.Fatalf("no boxes: %+v", got)
	}
	same := []detection.Box{{X1: 5, Y1: 5, X2: 20, Y2: 20}, {X1: 5, Y1: 5, X2: 20, Y2: 20}, {X1: 5, Y1: 5, X2: 20, Y2: 20}}
	if got, rois := SelectDetections(same, []float32{0.5, 0, 0.5, 0.6, 0, 0.4, 0.7, 0, 0.3}, 3, DetectConfig{NMSIoU: 0.5, MaxPerImage: 100}); len(got) != 1 || rois[0] != 2 {
		t.Fatalf("identical boxes: %+v", got)
	}
}

func TestProposalsDecodeSortAndSuppress(t *testing.T) {
	// One level, stride 16, one anchor (32x32) per location, a 2x2 map.
	g := NewAnchorGrids(AnchorConfig{Strides: []int{16}, Scales: []float64{2}, Ratios: []float64{1}})
	lv := RPNLevel{
		H: 2, W: 2,
		Objectness: []float32{3, 2, 1, float32(math.NaN())},
		// dx for every location: 0; the rest 0 except location 1, which
		// moves onto location 0's anchor (dx = -16/32 = -0.5).
		Deltas: []float32{
			0, -0.5, 0, 0, // dx
			0, 0, 0, 0, // dy
			0, 0, 0, 0, // dw
			0, 0, 0, 0, // dh
		},
	}
	cfg := RPNConfig{NMSPre: 1000, NMSIoU: 0.7, MaxProposals: 1000, DeltaClip: DefaultDeltaClip}
	got, err := Proposals(g, []RPNLevel{lv}, cfg, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Location 1 duplicates location 0's box and is suppressed; location 3
	// has a NaN score; location 0's anchor (-16..16) is clipped to 0..16.
	if len(got) != 2 || got[0].Box != (detection.Box{X1: 0, Y1: 0, X2: 16, Y2: 16}) || got[1].Box != (detection.Box{X1: 0, Y1: 0, X2: 16, Y2: 32}) {
		t.Fatalf("proposals %+v", got)
	}
	if math.Abs(float64(got[0].Score)-1/(1+math.Exp(-3))) > 1e-6 {
		t.Fatalf("score %v is not the sigmoid of the logit", got[0].Score)
	}
	cfg.MaxProposals = 1
	if got, _ := Proposals(g, []RPNLevel{lv}, cfg, 64, 64); len(got) != 1 {
		t.Fatalf("max proposals 1: %d", len(got))
	}
	if _, err := Proposals(g, []RPNLevel{{H: 3, W: 3, Objectness: make([]float32, 4)}}, cfg, 64, 64); err == nil {
		t.Fatal("mis-sized outputs must be an error")
	}
}

func TestMeanMasksUnflips(t *testing.T) {
	a := []float32{1, 0, 0, 0} // left column set in view 0
	b := []float32{0, 1, 0, 1} // right column set in a flipped view
	dst := make([]float32, 4)
	MeanMasks(append(a, b...), 2, []bool{false, true}, dst)
	if dst[0] != 1 || dst[1] != 0 || dst[2] != 0.5 || dst[3] != 0 {
		t.Fatalf("mean %v, want [1 0 0.5 0]", dst)
	}
}

// TestTopKMatchesFullSort checks quickselect + sort against sorting
// everything, with many ties.
func TestTopKMatchesFullSort(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for n := 0; n < 300; n++ {
		size := rng.Intn(400)
		c := make([]scored, size)
		for i := range c {
			c[i] = scored{float32(rng.Intn(20)), i}
		}
		want := append([]scored(nil), c...)
		sort.SliceStable(want, func(a, b int) bool { return want[a].v > want[b].v })
		k := rng.Intn(size + 5)
		got := topK(append([]scored(nil), c...), k)
		if k > 0 && k < len(want) {
			want = want[:k]
		}
		if len(got) != len(want) {
			t.Fatalf("size %d k %d: %d kept, want %d", size, k, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("size %d k %d: position %d is %v, want %v", size, k, i, got[i], want[i])
			}
		}
	}
}
