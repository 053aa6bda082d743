package cascade

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/htcstream/htcstream/detection"
)

// Tolerances of the stage-wise parity check: Go's graph inputs and outputs
// per view against the ones PyTorch wrote into fixture/tensors.yaml. Both
// sides run float32 (PyTorch eager, ONNX Runtime), so they differ by
// rounding only; the bounds are ~10x the worst difference measured on the
// default bundle and on the random-weight bundle of TestParityResized.
const (
	tolProposal   = 1e-3 // px, shared proposals (frame) and rois (view)
	tolLogit      = 2e-3 // stage_logits
	tolStageBox   = 3e-3 // px, stage_boxes (view)
	tolMask       = 1e-4 // stage_masks probabilities
	tolStageScore = 2e-5 // a detection's per-stage softmax score of its label
)

// tensorFile is one raw little-endian tensor of tensors.yaml.
type tensorFile struct {
	File  string `yaml:"file"`
	DType string `yaml:"dtype"`
	Shape []int  `yaml:"shape"`
}

// tensorView is one view of a plan in tensors.yaml.
type tensorView struct {
	ImageSize  [2]int      `yaml:"image_size"`
	Rois       *tensorFile `yaml:"rois"`
	Logits     *tensorFile `yaml:"stage_logits"`
	Boxes      *tensorFile `yaml:"stage_boxes"`
	MaskRois   *tensorFile `yaml:"mask_rois"`
	MaskLabels *tensorFile `yaml:"mask_labels"`
	Masks      *tensorFile `yaml:"stage_masks"` // absent in older fixtures' TTA plans
}

type tensorPlan struct {
	Views []tensorView `yaml:"views"`
}

// loadTensors reads fixture/tensors.yaml; nil when the fixture has none.
func loadTensors(t *testing.T, path string) map[string]*tensorPlan {
	t.Helper()
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tensorPlan{}
	if err := yaml.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return out
}

func readF32(t *testing.T, dir string, f *tensorFile) []float32 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, f.File))
	if err != nil {
		t.Fatal(err)
	}
	if f.DType != "float32" || len(raw) != 4*numel(f.Shape) {
		t.Fatalf("%s: %s with %d bytes for shape %v", f.File, f.DType, len(raw), f.Shape)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

func readI64(t *testing.T, dir string, f *tensorFile) []int64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, f.File))
	if err != nil {
		t.Fatal(err)
	}
	if f.DType != "int64" || len(raw) != 8*numel(f.Shape) {
		t.Fatalf("%s: %s with %d bytes for shape %v", f.File, f.DType, len(raw), f.Shape)
	}
	out := make([]int64, len(raw)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	return out
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// worst tracks the largest difference of one quantity and where it was.
type worst struct {
	name string
	tol  float64
	max  float64
	at   string
	n    int
}

func (w *worst) add(d float64, at func() string) {
	w.n++
	if d > w.max || d != d {
		w.max, w.at = d, at()
	}
}

func (w *worst) addRow(a, b []float32, at func() string) {
	for i := range a {
		w.add(math.Abs(float64(a[i])-float64(b[i])), at)
	}
}

func (w *worst) check(t *testing.T) string {
	t.Helper()
	if w.max > w.tol || w.max != w.max {
		t.Errorf("%s: Go and PyTorch differ by %.3g (tolerance %g) at %s", w.name, w.max, w.tol, w.at)
	}
	if w.n == 0 {
		return fmt.Sprintf("%s -", w.name)
	}
	return fmt.Sprintf("%s %.2g", w.name, w.max)
}

// checkStages compares, per view, the graph inputs and outputs Go produced
// (tr) with PyTorch's: the shared proposals, every stage's logits and
// boxes, every stage's masks of the compared detections (pair: the Go
// detection of each PyTorch one, -1 when not compared) and their
// stage_scores. Proposal rows are paired by position, and by box where
// float rounding swapped two nearly equal RPN scores.
func checkStages(t *testing.T, dir string, plan *tensorPlan, tr *detectTrace, want *fixtureDetections, got []detection.Detection, pair []int) {
	t.Helper()
	if plan == nil {
		t.Fatal("tensors.yaml has no entry for this plan")
	}
	if len(plan.Views) != len(tr.views) {
		t.Fatalf("tensors.yaml has %d views, Go ran %d", len(plan.Views), len(tr.views))
	}
	// Proposals: PyTorch row i is Go row perm[i].
	props := tr.shared[0]
	wp := want.Proposals
	if len(props) != len(wp) {
		t.Errorf("Go has %d shared proposals, PyTorch %d", len(props), len(wp))
	}
	prop := worst{name: "proposals (px)", tol: tolProposal}
	perm := make([]int, len(wp))
	usedP := make([]bool, len(props))
	unpaired := 0
	for i, p := range wp {
		perm[i] = -1
		d := func(j int) float64 { return boxDist(props[j], [4]float32{p[0], p[1], p[2], p[3]}) }
		if i < len(props) && !usedP[i] && d(i) <= tolProposal {
			perm[i] = i
		} else {
			best, bestD := -1, math.Inf(1)
			for j := range props {
				if !usedP[j] {
					if dj := d(j); dj < bestD {
						best, bestD = j, dj
					}
				}
			}
			if best < 0 || bestD > tolProposal {
				unpaired++
				continue
			}
			perm[i] = best
		}
		usedP[perm[i]] = true
		prop.add(d(perm[i]), func() string { return fmt.Sprintf("proposal %d", i) })
	}
	if unpaired > 0 {
		t.Errorf("%d of PyTorch's %d shared proposals have no Go proposal within %g px", unpaired, len(wp), tolProposal)
	}
	roi := worst{name: "rois (px)", tol: tolProposal}
	logit := worst{name: "stage_logits", tol: tolLogit}
	sbox := worst{name: "stage_boxes (px)", tol: tolStageBox}
	mroi := worst{name: "mask_rois (px)", tol: tolProposal}
	mask := worst{name: "stage_masks", tol: tolMask}
	for vi, tv := range plan.Views {
		gv := tr.views[vi]
		rois := readF32(t, dir, tv.Rois)
		logits := readF32(t, dir, tv.Logits)
		boxes := readF32(t, dir, tv.Boxes)
		st, c1 := tv.Logits.Shape[1], tv.Logits.Shape[2]
		if len(gv.logits) != len(props)*st*c1 || len(gv.boxes) != len(props)*st*4 {
			t.Fatalf("view %d: Go's bbox heads gave %d logits, %d box values for %d RoIs; PyTorch's shape %v",
				vi, len(gv.logits), len(gv.boxes), len(props), tv.Logits.Shape)
		}
		for i, j := range perm {
			if j < 0 {
				continue
			}
			at := func() string { return fmt.Sprintf("view %d, RoI %d", vi, i) }
			roi.addRow(gv.rois[5*j+1:5*j+5], rois[5*i+1:5*i+5], at)
			logit.addRow(gv.logits[j*st*c1:(j+1)*st*c1], logits[i*st*c1:(i+1)*st*c1], at)
			sbox.addRow(gv.boxes[j*st*4:(j+1)*st*4], boxes[i*st*4:(i+1)*st*4], at)
		}
		// Masks of the compared detections (PyTorch's mask rows follow its detections).
		mrois := readF32(t, dir, tv.MaskRois)
		labels := readI64(t, dir, tv.MaskLabels)
		var masks []float32
		area := 0
		if tv.Masks != nil {
			masks = readF32(t, dir, tv.Masks)
			area = tv.Masks.Shape[2] * tv.Masks.Shape[3]
		}
		if len(labels) != len(want.Detections) || len(gv.maskLabels) != len(got) {
			t.Fatalf("view %d: %d PyTorch mask rows for %d detections, %d Go rows for %d", vi, len(labels),
				len(want.Detections), len(gv.maskLabels), len(got))
		}
		for wi, gi := range pair {
			if gi < 0 {
				continue
			}
			at := func() string { return fmt.Sprintf("view %d, detection %d", vi, wi) }
			if gv.maskLabels[gi] != labels[wi] {
				t.Errorf("view %d, detection %d: Go's mask label %d, PyTorch's %d", vi, wi, gv.maskLabels[gi], labels[wi])
			}
			mroi.addRow(gv.maskRois[5*gi+1:5*gi+5], mrois[5*wi+1:5*wi+5], at)
			if masks != nil {
				mask.addRow(gv.masks[gi*st*area:(gi+1)*st*area], masks[wi*st*area:(wi+1)*st*area], at)
			}
		}
	}
	score := worst{name: "stage_scores", tol: tolStageScore}
	for wi, gi := range pair {
		if gi < 0 {
			continue
		}
		score.addRow(got[gi].StageScores, want.Detections[wi].StageScores, func() string { return fmt.Sprintf("detection %d", wi) })
	}
	var parts []any
	for _, w := range []*worst{&prop, &roi, &logit, &sbox, &mroi, &mask, &score} {
		parts = append(parts, w.check(t))
	}
	t.Logf("stage-wise worst |Go - PyTorch| over %d views: %v", len(plan.Views), parts)
}
