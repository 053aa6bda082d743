package cascade

import (
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/infer"
)

// TestStageWise: Options.Stages picks the stages whose scores and masks are
// used. All stages is the default test; stage 3 alone scores each detection
// with the softmax of stage 3's logits and pastes stage 3's mask.
func TestStageWise(t *testing.T) {
	b, err := infer.LoadBundle(DefaultBundle, infer.SessionOptions{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	img := loadPNG(t, filepath.Join(DefaultBundle, "fixture", "image.png"))
	run := func(o Options) ([]detection.Detection, *detectTrace) { return detectTraced(t, b, o, img) }
	all, _ := run(Options{})
	same, _ := run(Options{Stages: []int{3, 1, 2}})
	if !reflect.DeepEqual(all, same) {
		t.Error("stages 1,2,3 differ from the default test")
	}
	last, tr := run(Options{Stages: []int{3}})
	if len(last) == 0 {
		t.Fatal("no detections")
	}
	v := tr.views[0]
	tt, c1, size := 3, len(b.Manifest.Things)+1, b.Manifest.RCNN.MaskSize
	area := size * size
	p := make([]float32, c1)
	for k, d := range last {
		roi := tr.rois[0][k]
		softmax(v.logits[(roi*tt+2)*c1:(roi*tt+3)*c1], p)
		if math.Abs(float64(p[d.Label]-d.Score)) > 1e-6 {
			t.Errorf("detection %d: score %v, stage 3's softmax %v", k, d.Score, p[d.Label])
		}
		m := PasteMask(v.masks[(k*tt+2)*area:(k*tt+3)*area], size, d.Box, img.Width, img.Height, b.Manifest.RCNN.MaskThreshold)
		if !reflect.DeepEqual(m, d.Mask) {
			t.Errorf("detection %d: mask is not stage 3's", k)
		}
	}
	for _, bad := range [][]int{{}, {0}, {4}, {2, 2}} {
		if _, err := NewModel(b, Options{Stages: bad}); err == nil {
			t.Errorf("stages %v: want an error", bad)
		}
	}
	if _, err := NewModel(b, Options{Stages: []int{1}, Ensemble: Ensemble{Mode: EnsembleLogits, Weights: []float32{0, 1, 1}}}); err == nil {
		t.Error("stage 1 with weight 0: want an error")
	}
}
