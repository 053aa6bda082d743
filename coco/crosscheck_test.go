package coco

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/pyenv"
)

// The training module's evaluator (training/htc/evaluation) re-implements
// pycocotools in numpy; this one in Go. Neither can run pycocotools itself
// here, so each is checked against the other on the same seeded files.
const python = pyenv.Interpreter

func TestCrossCheckPythonEvaluator(t *testing.T) {
	training, err := filepath.Abs(filepath.Join("..", "training"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing; the cross-check needs Debian's python3 with numpy (run scripts/setup)", python)
	}
	if _, err := os.Stat(filepath.Join(training, "htc", "evaluation", "__main__.py")); err != nil {
		t.Fatalf("training/htc/evaluation is missing: %v", err)
	}
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			dir := t.TempDir()
			gt, withBox, maskOnly := crossCheckData(t, seed)
			gtPath := writeJSON(t, dir, "gt.json", gt)
			// Mask results with and without their box: for segm both
			// evaluators size a detection by its mask either way.
			runs := []struct {
				typ  IoUType
				dets []Detection
			}{{IoUBBox, withBox}, {IoUSegm, withBox}, {IoUSegm, maskOnly}}
			for _, r := range runs {
				resPath := writeJSON(t, dir, string(r.typ)+"-results.json", r.dets)
				py := runPythonEvaluator(t, training, gtPath, resPath, r.typ)

				// Through the files, as a user would.
				d, err := LoadDataset(gtPath)
				if err != nil {
					t.Fatal(err)
				}
				res, err := LoadResults(resPath)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Evaluate(d, res, r.typ)
				if err != nil {
					t.Fatal(err)
				}
				maxDiff := 0.0
				for i, v := range got.Values() {
					want, ok := py[StatNames[i]]
					if !ok {
						t.Fatalf("%s: Python output has no %s: %v", r.typ, StatNames[i], py)
					}
					diff := math.Abs(v - want)
					maxDiff = max(maxDiff, diff)
					if diff > 0.001 {
						t.Errorf("%s %s: Go %.6f, Python %.6f", r.typ, StatNames[i], v, want)
					}
				}
				t.Logf("%s: %d detections, largest difference %.3g\n%s", r.typ, len(res), maxDiff, got)
			}
		})
	}
}

func runPythonEvaluator(t *testing.T, training, gtPath, resPath string, typ IoUType) map[string]float64 {
	t.Helper()
	out := filepath.Join(filepath.Dir(resPath), string(typ)+"-stats.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-m", "htc.evaluation",
		"--gt", gtPath, "--results", resPath, "--iou-type", string(typ), "--out", out)
	cmd.Dir = training
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python -m htc.evaluation: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var stats map[string]map[string]float64
	if err := json.Unmarshal(b, &stats); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	s, ok := stats[string(typ)]
	if !ok {
		t.Fatalf("%s has no %q: %s", out, typ, b)
	}
	return s
}

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crossCheckData makes a small COCO set that touches every rule: several
// images (one without ground truth, one without detections), categories
// with gaps in their ids and one with no ground truth, objects of all three
// sizes, multi-polygon objects, crowd regions stored as uncompressed RLE,
// duplicates, false positives, a wrong category, equal scores within and
// across images, and more than 10 detections in one image and category.
// It returns the ground truth (as JSON-ready maps, to write uncompressed
// RLE), the results with boxes and masks, and the same without boxes.
func crossCheckData(t *testing.T, seed int64) (gt map[string]any, withBox, maskOnly []Detection) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	type im struct {
		id   int64
		w, h int
	}
	ims := []im{{3, 160, 120}, {7, 200, 150}, {11, 96, 128}, {12, 240, 180}, {20, 64, 48}}
	catIDs := []int64{1, 2, 5, 9} // 9 never gets a ground truth
	scores := []float64{0.95, 0.9, 0.8, 0.8, 0.7, 0.6, 0.5, 0.3}
	round := func(v float64) float64 { return math.Round(v*100) / 100 }

	// star is a star-shaped polygon around (cx, cy) of radius about r.
	star := func(cx, cy, r float64) []float64 {
		n := 5 + rng.Intn(5)
		var xy []float64
		for i := 0; i < n; i++ {
			a := 2 * math.Pi * (float64(i) + 0.8*rng.Float64()) / float64(n)
			rr := r * (0.6 + 0.4*rng.Float64())
			xy = append(xy, round(cx+rr*math.Cos(a)), round(cy+rr*math.Sin(a)))
		}
		return xy
	}
	jitter := func(xy []float64, r float64) []float64 {
		out := make([]float64, len(xy))
		for i, v := range xy {
			out[i] = round(v + r*0.3*(rng.Float64()-0.5))
		}
		return out
	}
	boxOf := func(polys [][]float64) []float64 {
		x0, y0, x1, y1 := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		for _, p := range polys {
			for i := 0; i < len(p); i += 2 {
				x0, x1 = min(x0, p[i]), max(x1, p[i])
				y0, y1 = min(y0, p[i+1]), max(y1, p[i+1])
			}
		}
		return []float64{round(x0), round(y0), round(x1 - x0), round(y1 - y0)}
	}
	addDet := func(img im, cat int64, polys [][]float64, score float64) {
		r, err := FromPolygons(polys, img.h, img.w)
		if err != nil {
			t.Fatal(err)
		}
		seg := &Segmentation{RLE: &r}
		withBox = append(withBox, Detection{ImageID: img.id, CategoryID: cat, BBox: boxOf(polys), Score: score, Segmentation: seg})
		maskOnly = append(maskOnly, Detection{ImageID: img.id, CategoryID: cat, Score: score, Segmentation: seg})
	}

	var images, anns []map[string]any
	annID := int64(1)
	for _, img := range ims {
		images = append(images, map[string]any{"id": img.id, "width": img.w, "height": img.h})
		nGT := 2 + rng.Intn(5)
		if img.id == 20 {
			nGT = 0
		}
		for g := 0; g < nGT; g++ {
			cat := catIDs[rng.Intn(3)]
			var r float64
			switch rng.Intn(3) {
			case 0:
				r = 2 + 10*rng.Float64() // small
			case 1:
				r = 20 + 25*rng.Float64() // medium
			default:
				r = 60 + 40*rng.Float64() // large
			}
			cx, cy := float64(img.w)*rng.Float64(), float64(img.h)*rng.Float64()
			polys := [][]float64{star(cx, cy, r)}
			if rng.Intn(4) == 0 {
				polys = append(polys, star(cx+r, cy, r/2))
			}
			mask, err := FromPolygons(polys, img.h, img.w)
			if err != nil {
				t.Fatal(err)
			}
			crowd := rng.Intn(6) == 0
			ann := map[string]any{
				"id": annID, "image_id": img.id, "category_id": cat,
				"bbox": boxOf(polys), "area": float64(mask.Area()), "iscrowd": 0,
				"segmentation": polys,
			}
			if crowd {
				ann["iscrowd"] = 1
				ann["segmentation"] = map[string]any{"size": mask.Size, "counts": mask.Counts}
			}
			anns = append(anns, ann)
			annID++

			if img.id == 12 {
				continue // an image with ground truth and no detection
			}
			if rng.Intn(5) > 0 {
				addDet(img, cat, [][]float64{jitter(polys[0], r)}, scores[rng.Intn(len(scores))])
			}
			if rng.Intn(4) == 0 { // duplicate
				addDet(img, cat, [][]float64{jitter(polys[0], r)}, scores[rng.Intn(len(scores))])
			}
			if rng.Intn(6) == 0 { // right place, wrong category
				addDet(img, catIDs[(rng.Intn(3)+1)%4], [][]float64{jitter(polys[0], r)}, scores[rng.Intn(len(scores))])
			}
			if crowd { // more inside the crowd region
				addDet(img, cat, [][]float64{star(cx, cy, r/3)}, scores[rng.Intn(len(scores))])
			}
		}
		if img.id == 12 {
			continue
		}
		nFP := 1 + rng.Intn(3)
		if img.id == 7 {
			nFP = 14 // past maxDets 10 in one category
		}
		for f := 0; f < nFP; f++ {
			cat := catIDs[rng.Intn(len(catIDs))]
			if img.id == 7 {
				cat = 1
			}
			r := 3 + 60*rng.Float64()
			addDet(img, cat, [][]float64{star(float64(img.w)*rng.Float64(), float64(img.h)*rng.Float64(), r)}, scores[rng.Intn(len(scores))])
		}
	}
	var cats []map[string]any
	for _, c := range catIDs {
		cats = append(cats, map[string]any{"id": c, "name": fmt.Sprintf("c%d", c)})
	}
	gt = map[string]any{"images": images, "annotations": anns, "categories": cats}
	return gt, withBox, maskOnly
}
