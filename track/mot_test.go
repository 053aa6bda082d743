package track

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
	"time"

	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/detection"
)

// This file measures the tracker on the bundled sample video with the CLEAR
// MOT accuracy (MOTA; Bernardin & Stiefelhagen 2008) and the identity F1
// (IDF1; Ristani et al. 2016), both with IoU >= 0.5 and the same class as a
// match. The detections are the bundled model's, from a fixture
// (testdata/README.md says how it was made); the ground truth is
// examples/sample.json with the true object identities of
// testdata/sample_gt_ids.json.

// object is one box of one frame, of a ground-truth object or a track.
type object struct {
	id    uint64
	class int
	box   [4]float32
}

// motScore holds the counts both metrics come from.
type motScore struct {
	GT, FN, FP, IDSW int // ground-truth boxes, misses, false positives, id switches
	MOTA             float64
	IDTP, Hyp        int // identity true positives, track boxes
	IDF1             float64
}

func (s motScore) String() string {
	return fmt.Sprintf("MOTA %.3f IDF1 %.3f (GT %d, FN %d, FP %d, IDSW %d, IDTP %d, track boxes %d)",
		s.MOTA, s.IDF1, s.GT, s.FN, s.FP, s.IDSW, s.IDTP, s.Hyp)
}

const motIoU = 0.5

func matchable(g, h object) (float64, bool) {
	if g.class != h.class {
		return 0, false
	}
	iou := boxIoU(g.box, h.box)
	return iou, iou >= motIoU
}

// clearMOT scores per-frame ground truth gt against hypotheses hyp.
func clearMOT(gt, hyp [][]object) motScore {
	var s motScore
	var as assigner
	last := map[uint64]uint64{} // ground-truth id -> the track id it last matched
	pairCount := map[[2]uint64]int{}
	var gtIDs, hypIDs []uint64
	gtIdx, hypIdx := map[uint64]int{}, map[uint64]int{}
	for f := range gt {
		g, h := gt[f], hyp[f]
		s.GT += len(g)
		s.Hyp += len(h)
		gDone, hDone := make([]bool, len(g)), make([]bool, len(h))
		// CLEAR MOT keeps last frame's correspondences that still match.
		for i, go_ := range g {
			prev, ok := last[go_.id]
			if !ok {
				continue
			}
			for j, ho := range h {
				if ho.id == prev && !hDone[j] {
					if _, ok := matchable(go_, ho); ok {
						gDone[i], hDone[j] = true, true
					}
				}
			}
		}
		// The rest: the assignment of most total IoU.
		var pairs []pairCost
		for i := range g {
			for j := range h {
				if gDone[i] || hDone[j] {
					continue
				}
				if iou, ok := matchable(g[i], h[j]); ok {
					pairs = append(pairs, pairCost{i, j, 1 - iou})
				}
			}
		}
		for i, j := range as.solve(len(g), len(h), pairs, 1-motIoU+1e-9) {
			if j < 0 {
				continue
			}
			if prev, ok := last[g[i].id]; ok && prev != h[j].id {
				s.IDSW++
			}
			last[g[i].id] = h[j].id
			gDone[i], hDone[j] = true, true
		}
		for _, d := range gDone {
			if !d {
				s.FN++
			}
		}
		for _, d := range hDone {
			if !d {
				s.FP++
			}
		}
		// IDF1 counts every matchable (object, track) pair of every frame.
		for _, go_ := range g {
			for _, ho := range h {
				if _, ok := matchable(go_, ho); ok {
					pairCount[[2]uint64{go_.id, ho.id}]++
				}
			}
		}
		for _, o := range g {
			if _, ok := gtIdx[o.id]; !ok {
				gtIdx[o.id] = len(gtIDs)
				gtIDs = append(gtIDs, o.id)
			}
		}
		for _, o := range h {
			if _, ok := hypIdx[o.id]; !ok {
				hypIdx[o.id] = len(hypIDs)
				hypIDs = append(hypIDs, o.id)
			}
		}
	}
	s.MOTA = 1 - float64(s.FN+s.FP+s.IDSW)/float64(s.GT)
	// IDF1: one track per object for the whole video, the pairing that
	// matches the most boxes.
	var pairs []pairCost
	for k, n := range pairCount {
		pairs = append(pairs, pairCost{gtIdx[k[0]], hypIdx[k[1]], -float64(n)})
	}
	for i, j := range as.solve(len(gtIDs), len(hypIDs), pairs, 0) {
		if j >= 0 {
			s.IDTP += pairCount[[2]uint64{gtIDs[i], hypIDs[j]}]
		}
	}
	s.IDF1 = 2 * float64(s.IDTP) / float64(s.GT+s.Hyp)
	return s
}

func TestCLEARMOTSmall(t *testing.T) {
	b := func(x float32) [4]float32 { return [4]float32{x, 0, x + 10, 10} }
	gt := [][]object{
		{{1, 0, b(0)}, {2, 0, b(100)}},
		{{1, 0, b(2)}, {2, 0, b(100)}},
		{{1, 0, b(4)}, {2, 0, b(100)}},
		{{1, 0, b(6)}},
	}
	hyp := [][]object{
		{{7, 0, b(0)}},                 // object 2 missed
		{{7, 0, b(2)}, {8, 0, b(100)}}, // both
		{{9, 0, b(4)}, {8, 0, b(100)}}, // object 1 switches to track 9
		{{9, 0, b(6)}, {5, 0, b(50)}},  // a false positive
	}
	s := clearMOT(gt, hyp)
	if s.GT != 7 || s.FN != 1 || s.FP != 1 || s.IDSW != 1 {
		t.Fatalf("%v", s)
	}
	if want := 1 - 3.0/7; math.Abs(s.MOTA-want) > 1e-12 {
		t.Errorf("MOTA %v, want %v", s.MOTA, want)
	}
	// Identity: object 1 <-> track 7 (2 boxes) or 9 (2), object 2 <-> 8 (2).
	if s.IDTP != 4 || math.Abs(s.IDF1-8.0/(7+7)) > 1e-12 {
		t.Errorf("IDTP %d IDF1 %v", s.IDTP, s.IDF1)
	}
}

// sample is the bundled video's ground truth and detections.
type sample struct {
	gt   [][]object
	pts  []time.Duration
	seq  []int64
	dets [][]detection.Detection
}

func loadSample(t testing.TB) sample {
	t.Helper()
	var gtFile struct {
		Images []struct {
			ID         int `json:"id"`
			FrameIndex int `json:"frame_index"`
		} `json:"images"`
		Annotations []struct {
			ImageID    int        `json:"image_id"`
			CategoryID int        `json:"category_id"`
			BBox       [4]float32 `json:"bbox"`
		} `json:"annotations"`
	}
	var ids struct {
		IDs []uint64 `json:"annotation_object_ids"`
	}
	var detFile struct {
		Width, Height int
		Frames        []struct {
			Seq   int64               `json:"seq"`
			PTSms float64             `json:"pts_ms"`
			Dets  [][]json.RawMessage `json:"dets"`
		} `json:"frames"`
	}
	for path, v := range map[string]any{
		"../examples/sample.json":         &gtFile,
		"testdata/sample_gt_ids.json":     &ids,
		"testdata/sample_detections.json": &detFile,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	if len(ids.IDs) != len(gtFile.Annotations) {
		t.Fatalf("%d identities for %d annotations", len(ids.IDs), len(gtFile.Annotations))
	}
	var s sample
	s.gt = make([][]object, len(gtFile.Images))
	for k, a := range gtFile.Annotations {
		f := a.ImageID - 1 // image id = frame index + 1
		x, y, w, h := a.BBox[0], a.BBox[1], a.BBox[2], a.BBox[3]
		s.gt[f] = append(s.gt[f], object{ids.IDs[k], a.CategoryID - 1, [4]float32{x, y, x + w, y + h}})
	}
	if len(detFile.Frames) != len(s.gt) {
		t.Fatalf("%d frames of detections, %d of ground truth", len(detFile.Frames), len(s.gt))
	}
	for _, fr := range detFile.Frames {
		var dets []detection.Detection
		for _, row := range fr.Dets {
			var d detection.Detection
			var counts string
			for i, dst := range []any{&d.Box.X1, &d.Box.Y1, &d.Box.X2, &d.Box.Y2, &d.Score, &d.Label, &d.Class, &counts} {
				if err := json.Unmarshal(row[i], dst); err != nil {
					t.Fatal(err)
				}
			}
			if counts != "" {
				rle, err := coco.ParseCounts(counts, detFile.Height, detFile.Width)
				if err != nil {
					t.Fatal(err)
				}
				full, err := rle.Decode()
				if err != nil {
					t.Fatal(err)
				}
				d.Mask = cropMask(full, detFile.Width, detFile.Height, d.Box.XYXY())
			}
			dets = append(dets, d)
		}
		s.seq = append(s.seq, fr.Seq)
		s.pts = append(s.pts, time.Duration(fr.PTSms*float64(time.Millisecond)))
		s.dets = append(s.dets, dets)
	}
	return s
}

// cropMask cuts a frame-sized mask to the box, as cascade pastes them.
func cropMask(full []byte, w, h int, b [4]float32) detection.Mask {
	x0, y0 := max(0, int(b[0])), max(0, int(b[1]))
	x1, y1 := min(w, int(math.Ceil(float64(b[2])))), min(h, int(math.Ceil(float64(b[3]))))
	if x1 <= x0 || y1 <= y0 {
		return detection.Mask{}
	}
	m := detection.Mask{X: x0, Y: y0, W: x1 - x0, H: y1 - y0, Bits: make([]byte, (x1-x0)*(y1-y0))}
	for y := y0; y < y1; y++ {
		copy(m.Bits[(y-y0)*m.W:(y-y0+1)*m.W], full[y*w+x0:y*w+x1])
	}
	return m
}

// track runs a tracker over the sample and returns its confirmed boxes per
// frame.
func (s sample) track(t testing.TB, set Settings) [][]object {
	tr, err := NewTracker(set)
	if err != nil {
		t.Fatal(err)
	}
	hyp := make([][]object, len(s.dets))
	for f, dets := range s.dets {
		tr.Update(s.seq[f], s.pts[f], dets)
		for _, d := range dets {
			if d.TrackID != 0 {
				hyp[f] = append(hyp[f], object{d.TrackID, d.Label, d.Box.XYXY()})
			}
		}
	}
	return hyp
}

// TestSampleVideo measures MOTA and IDF1 on the bundled sample (the numbers
// in docs/benchmarks.md, "Tracking"; go test -run SampleVideo -v ./track/).
// Beside the defaults it runs the variants the choices were made against,
// and a detector-only reference: every detection at or above HighScore
// given its own id, which has the tracker's boxes but no identities.
func TestSampleVideo(t *testing.T) {
	s := loadSample(t)
	def := DefaultSettings()
	noMask := def
	noMask.MaskTieBreak = 0
	noLow := def
	noLow.LowScore = def.HighScore
	cut03 := def
	cut03.LowScore = 0.3 // what htcstream run's default --score-threshold 0.3 passes on
	hits2 := def
	hits2.MinHits = 2 // ByteTrack's
	var results = map[string]motScore{}
	for _, c := range []struct {
		name string
		set  Settings
	}{
		{"defaults", def}, {"mask tie-break off", noMask}, {"second association off", noLow},
		{"low_score 0.3", cut03}, {"min_hits 2", hits2},
	} {
		r := clearMOT(s.gt, s.track(t, c.set))
		results[c.name] = r
		t.Logf("%-24s %v", c.name, r)
	}
	// Reference: per-frame detections with no identity at all.
	var next uint64
	perFrame := make([][]object, len(s.dets))
	for f, dets := range s.dets {
		for _, d := range dets {
			if d.Score >= def.HighScore {
				next++
				perFrame[f] = append(perFrame[f], object{next, d.Label, d.Box.XYXY()})
			}
		}
	}
	noTracking := clearMOT(s.gt, perFrame)
	t.Logf("%-24s %v", "detections, no tracking", noTracking)

	// Floors a little under the measured numbers, so that a change that
	// makes tracking worse fails here.
	if r := results["defaults"]; r.MOTA < 0.50 || r.IDF1 < 0.60 || r.IDSW > 6 {
		t.Errorf("defaults: %v", r)
	}
	// The design's claims (docs/benchmarks.md, "Tracking"), each with a
	// margin under what was measured so that noise in a retrained model
	// does not flip them, but a tracker that lost the feature does.
	def0 := results["defaults"]
	// The second association (ByteTrack's low-score pass) keeps occluded
	// objects' ids: +0.11 IDF1 measured.
	if noLow := results["second association off"]; def0.IDF1-noLow.IDF1 < 0.05 || noLow.FN <= def0.FN {
		t.Errorf("the second association should gain IDF1 and lose fewer objects: with %v, without %v", def0, noLow)
	}
	// Feeding it only what the display threshold passes loses that gain.
	if cut := results["low_score 0.3"]; def0.IDF1-cut.IDF1 < 0.05 {
		t.Errorf("low_score 0.3 should cost IDF1: defaults %v, low_score 0.3 %v", def0, cut)
	}
	// Three hits before an id (not ByteTrack's two) halves the false
	// tracks of flickering detections.
	if h2 := results["min_hits 2"]; h2.FP <= def0.FP {
		t.Errorf("min_hits 2 should add false positives: defaults %v, min_hits 2 %v", def0, h2)
	}
	// Identities at all: per-frame detections with no tracker have the
	// boxes but almost no IDF1.
	if def0.IDF1 < noTracking.IDF1+0.5 {
		t.Errorf("tracking %v is not far above no tracking %v", def0, noTracking)
	}
}
