package evaluate

import (
	"math"
	"testing"

	"github.com/htcstream/htcstream/coco"
)

// det is a detection of image 1 whose mask fills its box on a 100x100 frame.
func det(t *testing.T, cat int64, score float64, x, y, w, h int) coco.Detection {
	t.Helper()
	bits := make([]byte, w*h)
	for i := range bits {
		bits[i] = 1
	}
	rle, err := coco.EncodeRegion(x, y, w, h, bits, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	return coco.Detection{ImageID: 1, CategoryID: cat, Score: score,
		BBox: []float64{float64(x), float64(y), float64(w), float64(h)}, Segmentation: &coco.Segmentation{RLE: &rle}}
}

func TestAgreementCountsEachWayADetectionCanDiffer(t *testing.T) {
	ref := []coco.Detection{
		det(t, 1, 0.9, 0, 0, 20, 20),   // kept: same box, score 0.8
		det(t, 1, 0.5, 50, 50, 20, 10), // kept: box shifted by 2 px
		det(t, 2, 0.4, 0, 50, 10, 10),  // fell: the model's pair scores 0.2
		det(t, 2, 0.6, 30, 0, 10, 10),  // missing: the model has it as class 3
		det(t, 1, 0.1, 80, 80, 10, 10), // rose: the model's pair scores 0.35
		det(t, 1, 0.05, 0, 80, 5, 5),   // below the score on both sides, unpaired
	}
	model := []coco.Detection{
		det(t, 1, 0.8, 0, 0, 20, 20),
		det(t, 1, 0.5, 52, 50, 20, 10),
		det(t, 2, 0.2, 0, 50, 10, 10),
		det(t, 3, 0.6, 30, 0, 10, 10), // extra
		det(t, 1, 0.35, 80, 80, 10, 10),
		det(t, 1, 0.3, 60, 0, 5, 5), // extra
	}
	a, err := agree(model, ref, 0.3)
	if err != nil {
		t.Fatal(err)
	}
	want := Agreement{MinScore: 0.3, Reference: 4, Model: 5, Matched: 2, Missing: 1, Fell: 1, Extra: 2, Rose: 1}
	got := a
	got.ScoreDiff, got.BoxIoU, got.MaskIoU = Spread{}, Spread{}, Spread{}
	if got != want {
		t.Errorf("counts %+v\nwant   %+v", got, want)
	}
	// Reference = Matched + Fell + Missing; Model = Matched + Rose + Extra
	if a.Reference != a.Matched+a.Fell+a.Missing || a.Model != a.Matched+a.Rose+a.Extra {
		t.Errorf("counts do not add up: %+v", a)
	}
	// the pairs: the two kept, the fallen and the risen one
	shifted := 18.0 * 10 / (22 * 10) // 2 px of 20 in x
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	if !near(a.ScoreDiff.Max, 0.25) || !near(a.ScoreDiff.Min, 0) || !near(a.ScoreDiff.Mean, (0.1+0+0.2+0.25)/4) {
		t.Errorf("score diff %+v", a.ScoreDiff)
	}
	if !near(a.BoxIoU.Min, shifted) || !near(a.MaskIoU.Min, shifted) || !near(a.MaskIoU.Max, 1) || !near(a.MaskIoU.Mean, (3+shifted)/4) {
		t.Errorf("box IoU %+v, mask IoU %+v, want min %v", a.BoxIoU, a.MaskIoU, shifted)
	}
}

func TestAgreementOfIdenticalDetectionsIsPerfect(t *testing.T) {
	ds := []coco.Detection{det(t, 1, 0.9, 0, 0, 20, 20), det(t, 1, 0.8, 2, 2, 20, 20), det(t, 2, 0.7, 40, 40, 30, 30)}
	a, err := agree(ds, ds, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if a.Matched != 3 || a.Missing+a.Extra+a.Fell+a.Rose != 0 || a.ScoreDiff.Max != 0 || a.MaskIoU.Min != 1 || a.BoxIoU.Min != 1 {
		t.Errorf("%+v", a)
	}
	// two overlapping boxes of one class pair with their own copies, not each other
	gt := referenceTruth(ds, map[int64][2]int{1: {100, 100}}, []string{"a", "b"}, 0.5)
	for _, typ := range []coco.IoUType{coco.IoUBBox, coco.IoUSegm} {
		st, err := coco.Evaluate(gt, ds, typ)
		if err != nil {
			t.Fatal(err)
		}
		if st.AP != 1 {
			t.Errorf("%s AP of the reference against itself: %v", typ, st.AP)
		}
	}
}

func TestSpreadPercentiles(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	s := spread(v)
	if s != (Spread{Mean: 5.5, Min: 1, P10: 1, P90: 9, Max: 10}) {
		t.Errorf("%+v", s)
	}
	if spread(nil) != (Spread{}) {
		t.Error("empty")
	}
}
