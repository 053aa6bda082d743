package coco

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gtBox is a ground-truth box annotation whose area is the box's.
func gtBox(id, img, cat int64, bb [4]float64, crowd bool) Annotation {
	a := Annotation{ID: id, ImageID: img, CategoryID: cat, BBox: bb[:], Area: bb[2] * bb[3]}
	if crowd {
		a.IsCrowd = 1
	}
	return a
}

func det(img, cat int64, score float64, bb [4]float64) Detection {
	return Detection{ImageID: img, CategoryID: cat, Score: score, BBox: bb[:]}
}

func images(ids ...int64) []Image {
	var out []Image
	for _, id := range ids {
		out = append(out, Image{ID: id, Width: 640, Height: 480})
	}
	return out
}

func cats(ids ...int64) []Category {
	var out []Category
	for _, id := range ids {
		out = append(out, Category{ID: id, Name: "c"})
	}
	return out
}

// tpFpTp is AP at every IoU threshold for ranked TP, FP, TP on 2 ground
// truths: recall .5 .5 1, precision 1 .5 2/3, made non-increasing from the
// right 1 2/3 2/3. Recall thresholds 0.00..0.50 (51 of them) find recall .5
// at rank 1 -> 1; 0.51..1.00 (50) find recall 1 at rank 3 -> 2/3.
// (51*1 + 50*2/3)/101 = 0.834983...
var tpFpTp = (51 + 50*2.0/3) / 101

func TestEvaluateBBox(t *testing.T) {
	cases := []struct {
		name string
		gt   Dataset
		dets []Detection
		want Stats
	}{
		{
			// One small (100), one medium (2500) and one large (10000) box,
			// each found exactly: everything is 1.
			name: "perfect",
			gt: Dataset{
				Images:     images(1, 2),
				Categories: cats(1, 2),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 2, [4]float64{10, 10, 50, 50}, false),
					gtBox(3, 2, 1, [4]float64{0, 0, 100, 100}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.9, [4]float64{0, 0, 10, 10}),
				det(1, 2, 0.8, [4]float64{10, 10, 50, 50}),
				det(2, 1, 0.7, [4]float64{0, 0, 100, 100}),
			},
			want: Stats{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
		},
		{
			// Ground truth in every range and no detection: 0, not -1.
			name: "no detections",
			gt: Dataset{
				Images:     images(1, 2),
				Categories: cats(1, 2),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 2, [4]float64{10, 10, 50, 50}, false),
					gtBox(3, 2, 1, [4]float64{0, 0, 100, 100}, false),
				},
			},
			want: Stats{},
		},
		{
			// Two small ground truths; d .9 on g1 (TP), a duplicate of g1 at
			// .8 (g1 is taken, so FP), d .7 on g2 (TP): AP = tpFpTp at every
			// threshold. maxDets=1 keeps only the .9: AR1 = 1/2. No medium
			// or large ground truth: -1.
			name: "duplicate is a false positive",
			gt: Dataset{
				Images:     images(1),
				Categories: cats(1),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 1, [4]float64{20, 0, 10, 10}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.8, [4]float64{0, 0, 10, 10}),
				det(1, 1, 0.9, [4]float64{0, 0, 10, 10}),
				det(1, 1, 0.7, [4]float64{20, 0, 10, 10}),
			},
			want: Stats{tpFpTp, tpFpTp, tpFpTp, tpFpTp, -1, -1, 0.5, 1, 1, 1, -1, -1},
		},
		{
			// One regular small box g1 and a crowd region x 50..90, y 0..40.
			// .95: inside the crowd (IoU over its own area = 1): ignored at
			// every threshold, and the crowd can take more than one.
			// .9: x 85..95, half inside: 50/100 = 0.5, so ignored at 0.50
			// but a FP from 0.55 on. .8: g1 exactly, TP.
			// t=.50: TP only -> AP 1. t>=.55: FP, TP: recall 0 1, precision
			// 0 .5 -> .5 .5: AP .5. Mean (1 + 9*.5)/10 = .55; AP75 .5.
			// Recall is 1 with 10 or 100 detections; with 1 only the .95
			// counts, and it is ignored: AR1 0. The crowd is ignored in all
			// ranges, so medium and large have no ground truth: -1.
			name: "crowd",
			gt: Dataset{
				Images:     images(1),
				Categories: cats(1),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 1, [4]float64{50, 0, 40, 40}, true),
				},
			},
			dets: []Detection{
				det(1, 1, 0.95, [4]float64{60, 10, 10, 10}),
				det(1, 1, 0.9, [4]float64{85, 0, 10, 10}),
				det(1, 1, 0.8, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{0.55, 1, 0.5, 0.55, -1, -1, 0, 1, 1, 1, -1, -1},
		},
		{
			// A small (100) and a large (40000) ground truth. Ranked: .9 on
			// the large, .85 a FP of area 2500 (medium), .8 on the small.
			// all: TP FP TP -> tpFpTp. small: the large ground truth is
			// ignored and so is the .9 matched to it; the FP is unmatched
			// and outside [0, 1024]: ignored; TP -> 1. medium: no ground
			// truth -> -1. large: .9 TP; FP outside [9216, 1e10] ignored;
			// .8 matched the ignored small one: ignored -> 1.
			// AR1: only the .9 -> 1 of 2 ground truths.
			name: "area ranges",
			gt: Dataset{
				Images:     images(1),
				Categories: cats(1),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 1, [4]float64{100, 100, 200, 200}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.9, [4]float64{100, 100, 200, 200}),
				det(1, 1, 0.85, [4]float64{300, 0, 50, 50}),
				det(1, 1, 0.8, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{tpFpTp, tpFpTp, tpFpTp, 1, -1, 1, 0.5, 1, 1, 1, -1, 1},
		},
		{
			// As above but the FP is small (25): now it counts in small.
			// small ranking: .9 ignored, .85 FP, .8 TP. Ignored detections
			// stay in the cumulative sums adding nothing: tp 0 0 1, fp 0 1 1,
			// recall 0 0 1, precision 0 0 .5 -> .5 .5 .5: APs .5.
			// all: TP FP TP again. large: FP ignored, as before: 1.
			name: "false positive inside the range",
			gt: Dataset{
				Images:     images(1),
				Categories: cats(1),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 1, 1, [4]float64{100, 100, 200, 200}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.9, [4]float64{100, 100, 200, 200}),
				det(1, 1, 0.85, [4]float64{300, 0, 5, 5}),
				det(1, 1, 0.8, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{tpFpTp, tpFpTp, tpFpTp, 0.5, -1, 1, 0.5, 1, 1, 1, -1, 1},
		},
		{
			// IoU thresholds: the detection x 0..10 vs ground truth x 0..8,
			// y 0..10: 80/100 = 0.8 matches at .50 .. .80 (7 of 10
			// thresholds, .8 >= .8 included): AP 0.7, AP50 1, AP75 1; recall
			// the same. Two images ranked across: image 2's .95 FP (no
			// ground truth there, a second category's box) does not enter
			// category 1.
			name: "iou 0.8",
			gt: Dataset{
				Images:     images(1, 2),
				Categories: cats(1, 2),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 8, 10}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.5, [4]float64{0, 0, 10, 10}),
				det(2, 2, 0.95, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{0.7, 1, 1, 0.7, -1, -1, 0.7, 0.7, 0.7, 0.7, -1, -1},
		},
		{
			// maxDets: image 1 ranks a FP .9 above its TP .8; image 2 has
			// one TP .7. With 1 per image only image 2's ground truth is
			// found: AR1 = .5. With 100: ranked .9 FP, .8 TP, .7 TP:
			// recall 0 .5 1, precision 0 .5 2/3 -> 2/3 2/3 2/3: AP 2/3.
			name: "maxDets 1",
			gt: Dataset{
				Images:     images(1, 2),
				Categories: cats(1),
				Annotations: []Annotation{
					gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false),
					gtBox(2, 2, 1, [4]float64{0, 0, 10, 10}, false),
				},
			},
			dets: []Detection{
				det(1, 1, 0.9, [4]float64{50, 50, 10, 10}),
				det(1, 1, 0.8, [4]float64{0, 0, 10, 10}),
				det(2, 1, 0.7, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{2.0 / 3, 2.0 / 3, 2.0 / 3, 2.0 / 3, -1, -1, 0.5, 1, 1, 1, -1, -1},
		},
		{
			// Detections of an image or category the ground truth does not
			// have are left out; a category without ground truth is -1 and
			// left out of the means.
			name: "foreign image and category",
			gt: Dataset{
				Images:      images(1),
				Categories:  cats(1, 2),
				Annotations: []Annotation{gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false)},
			},
			dets: []Detection{
				det(1, 1, 0.5, [4]float64{0, 0, 10, 10}),
				det(9, 1, 0.9, [4]float64{0, 0, 10, 10}),
				det(1, 7, 0.9, [4]float64{0, 0, 10, 10}),
				det(1, 2, 0.9, [4]float64{0, 0, 10, 10}),
			},
			want: Stats{1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Evaluate(&c.gt, c.dets, IoUBBox)
			if err != nil {
				t.Fatal(err)
			}
			assertStats(t, got, c.want, 1e-12)
		})
	}
}

func assertStats(t *testing.T, got, want Stats, tol float64) {
	t.Helper()
	g, w := got.Values(), want.Values()
	for i := range g {
		if math.Abs(g[i]-w[i]) > tol {
			t.Errorf("%s = %.6f, want %.6f", StatNames[i], g[i], w[i])
		}
	}
}

func TestEvaluateSegm(t *testing.T) {
	// 100x100 image. A polygon square 10..30 (400 px, small) and an
	// uncompressed-RLE crowd region over columns 60..99 (4000 px).
	square := []float64{10, 10, 30, 10, 30, 30, 10, 30}
	sqRLE, err := FromPolygon(square, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	crowd := RLE{Size: [2]int{100, 100}, Counts: []uint32{6000, 4000}}
	// A detection inside the crowd: columns 70..79, rows 0..99 (runs of
	// whole columns), 1000 px, medium.
	inCrowd := RLE{Size: [2]int{100, 100}, Counts: []uint32{7000, 1000, 2000}}
	// The detection's box is 0..100 x 0..100 (area 10000, large); mask
	// evaluation must use the mask's area (1000, medium) instead.
	gt := Dataset{
		Images:     []Image{{ID: 1, Width: 100, Height: 100}},
		Categories: cats(1),
		Annotations: []Annotation{
			{ID: 1, ImageID: 1, CategoryID: 1, BBox: []float64{10, 10, 20, 20}, Area: 400, Segmentation: &Segmentation{Polygons: [][]float64{square}}},
			{ID: 2, ImageID: 1, CategoryID: 1, BBox: []float64{60, 0, 40, 100}, Area: 4000, IsCrowd: 1, Segmentation: &Segmentation{RLE: &crowd}},
		},
	}
	dets := []Detection{
		{ImageID: 1, CategoryID: 1, Score: 0.9, BBox: []float64{0, 0, 100, 100}, Segmentation: &Segmentation{RLE: &inCrowd}},
		{ImageID: 1, CategoryID: 1, Score: 0.8, Segmentation: &Segmentation{RLE: &sqRLE}},
	}
	// segm: .9 inside the crowd -> ignored; .8 is the square -> TP. All 1
	// but AR1, where only the ignored .9 is left: 0. No regular medium or
	// large ground truth -> -1.
	got, err := Evaluate(&gt, dets, IoUSegm)
	if err != nil {
		t.Fatal(err)
	}
	assertStats(t, got, Stats{1, 1, 1, 1, -1, -1, 0, 1, 1, 1, -1, -1}, 1e-12)

	// The same with the crowd made a regular ground truth of area 4000
	// (medium): the .9 now overlaps it 1000/4000 = .25, unmatched at every
	// threshold, a FP whose mask area 1000 is small (<= 1024); its box's
	// 10000 would be large and make it ignored in small.
	// all: FP, TP over 2 ground truths: recall 0 .5, precision 0 .5 ->
	// .5 .5; thresholds 0..0.50 -> .5, above none -> 0: 51*.5/101.
	// small: the FP counts: recall 0 1 over the 1 small ground truth,
	// precision 0 .5 -> .5 .5: APs .5 (1 with the box's area).
	// medium: the FP is outside the range, the TP matched the ignored
	// square: both ignored, nothing found: APm 0, ARm 0.
	// AR1: only the FP -> 0.
	gt.Annotations[1].IsCrowd = 0
	got, err = Evaluate(&gt, dets, IoUSegm)
	if err != nil {
		t.Fatal(err)
	}
	half := 51 * 0.5 / 101
	assertStats(t, got, Stats{half, half, half, 0.5, 0, -1, 0, 0.5, 0.5, 1, 0, -1}, 1e-12)
}

func TestEvaluateErrors(t *testing.T) {
	gt := Dataset{
		Images:      images(1),
		Categories:  cats(1),
		Annotations: []Annotation{gtBox(1, 1, 1, [4]float64{0, 0, 10, 10}, false)},
	}
	gt.Annotations[0].Segmentation = &Segmentation{Polygons: [][]float64{{0, 0, 10, 0, 10, 10}}}
	cases := []struct {
		name string
		typ  IoUType
		dets []Detection
		want string
	}{
		{"bad type", "keypoints", nil, "iou type"},
		{"NaN score", IoUBBox, []Detection{det(1, 1, math.NaN(), [4]float64{0, 0, 1, 1})}, "NaN"},
		{"short bbox", IoUBBox, []Detection{{ImageID: 1, CategoryID: 1, BBox: []float64{1, 2}}}, "bbox"},
		{"no box or mask", IoUBBox, []Detection{{ImageID: 1, CategoryID: 1}}, "neither"},
		{"segm without mask", IoUSegm, []Detection{det(1, 1, 1, [4]float64{0, 0, 1, 1})}, "result 0 has no segmentation"},
		{"mask of another size", IoUSegm, []Detection{{ImageID: 1, CategoryID: 1, Score: 1,
			Segmentation: &Segmentation{RLE: &RLE{Size: [2]int{2, 2}, Counts: []uint32{4}}}}}, "size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Evaluate(&gt, c.dets, c.typ)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
		})
	}
}

func TestEvaluateBBoxOfMaskOnlyResults(t *testing.T) {
	// A result without a box gets its mask's box and its mask's area, as
	// loadRes gives them. The mask is columns 70..79 of a 100x100 image
	// (1000 px, small); its box [70 0 10 100] is the ground truth's.
	inCols := RLE{Size: [2]int{100, 100}, Counts: []uint32{7000, 1000, 2000}}
	gt := Dataset{
		Images:      []Image{{ID: 1, Width: 100, Height: 100}},
		Categories:  cats(1),
		Annotations: []Annotation{gtBox(1, 1, 1, [4]float64{70, 0, 10, 100}, false)},
	}
	dets := []Detection{{ImageID: 1, CategoryID: 1, Score: 0.5, Segmentation: &Segmentation{RLE: &inCols}}}
	got, err := Evaluate(&gt, dets, IoUBBox)
	if err != nil {
		t.Fatal(err)
	}
	assertStats(t, got, Stats{1, 1, 1, 1, -1, -1, 1, 1, 1, 1, -1, -1}, 1e-12)

	gt.Annotations[0].Segmentation = nil
	if _, err := Evaluate(&gt, dets, IoUSegm); err == nil || !strings.Contains(err.Error(), "ground-truth annotation 1 has no segmentation") {
		t.Fatalf("segm of a ground truth without mask: err = %v", err)
	}
}

func TestThresholdsAreNumpys(t *testing.T) {
	// np.linspace(.5, .95, 10): index 8 is 0.8999999999999999, not 0.9.
	want := []float64{0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.8999999999999999, 0.95}
	for i, v := range want {
		if iouThrs[i] != v {
			t.Fatalf("iouThrs[%d] = %v, want %v", i, iouThrs[i], v)
		}
	}
	for i := 0; i < 100; i++ {
		if recThrs[i] != float64(i)*0.01 {
			t.Fatalf("recThrs[%d] = %v", i, recThrs[i])
		}
	}
	if recThrs[100] != 1 {
		t.Fatalf("recThrs[100] = %v", recThrs[100])
	}
}

func TestStatsString(t *testing.T) {
	s := Stats{0.3721, 0.5, 0.25, -1, 0, 1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6}
	lines := strings.Split(s.String(), "\n")
	want := map[int]string{
		0:  " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.372",
		1:  " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.500",
		3:  " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000",
		4:  " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 0.000",
		6:  " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.100",
		11: " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = 0.600",
	}
	if len(lines) != 12 {
		t.Fatalf("%d lines, want 12:\n%s", len(lines), s)
	}
	for i, w := range want {
		if lines[i] != w {
			t.Errorf("line %d:\n got %q\nwant %q", i, lines[i], w)
		}
	}
	js, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var named map[string]float64
	if err := json.Unmarshal(js, &named); err != nil {
		t.Fatal(err)
	}
	for i, n := range StatNames {
		if named[n] != s.Values()[i] {
			t.Fatalf("JSON %s = %v, want %v (%s)", n, named[n], s.Values()[i], js)
		}
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"images": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	notCOCO := filepath.Join(dir, "other.json")
	if err := os.WriteFile(notCOCO, []byte(`{"foo": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{bad, notCOCO, filepath.Join(dir, "missing.json")} {
		if _, err := LoadDataset(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("LoadDataset(%s): err = %v, want it to name the file", p, err)
		}
		if _, err := LoadResults(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("LoadResults(%s): err = %v, want it to name the file", p, err)
		}
	}
	good := filepath.Join(dir, "gt.json")
	doc := `{"images":[{"id":1,"width":4,"height":4}],"categories":[{"id":3,"name":"x"}],
	  "annotations":[{"id":1,"image_id":1,"category_id":3,"bbox":[0,0,2,4],"area":8,"iscrowd":1,
	  "segmentation":{"size":[4,4],"counts":[0,8,8]}}]}`
	if err := os.WriteFile(good, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := LoadDataset(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Annotations) != 1 || d.Annotations[0].Segmentation.RLE.Area() != 8 || d.Annotations[0].IsCrowd != 1 {
		t.Fatalf("loaded %+v", d)
	}
}
