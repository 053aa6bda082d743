package evaluate

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/pipeline"
)

// MatchIoU is the box IoU at which a model's detection and a reference's
// detection of the same class are the same object.
const MatchIoU = 0.5

// CompareConfig is what Compare measures: one model against a reference
// model on the same frames, e.g. a bundle's INT8 form against the float
// bundle it was quantised from. No ground truth is needed.
type CompareConfig struct {
	// Model is the candidate, Reference what it is held against; both run
	// with the same settings (scales, threshold, threads) but their bundles.
	Model, Reference pipeline.ModelSpec
	// Data is a video, a picture folder, or a COCO instances JSON of which
	// only the pictures are read (Images as for Eval).
	Data, Images string
	// MinScore: detections of either model scoring at least this are the
	// ones compared, and the reference's are the ground truth of the
	// candidate's AP.
	MinScore float64
	// Log shows a progress line when it is a terminal.
	Log io.Writer
}

// CompareResult is what Compare found.
type CompareResult struct {
	Model, Reference ModelRun
	Images           int
	Agreement        Agreement
	// Stats are the candidate's bbox and segm AP with the reference's
	// detections at or above MinScore as the ground truth.
	Stats []TypeStats
}

// ModelRun is one model's pass over the frames.
type ModelRun struct {
	Bundle string
	// Views is the views per frame (TTA); Keyframes the frames the model
	// ran on.
	Views, Keyframes int
	Detections       []coco.Detection
	Elapsed          time.Duration
	Timings          cascade.Timings
}

// Above counts the run's detections scoring at least s.
func (r *ModelRun) Above(s float64) int {
	n := 0
	for _, d := range r.Detections {
		if d.Score >= s {
			n++
		}
	}
	return n
}

// Agreement says how far a model's detections are from a reference's on
// the same frames. Each reference detection, highest score first, is paired
// with the unpaired model detection of its class that overlaps it most
// (box IoU at least MatchIoU), whatever either score; the figures then count
// the pairs and detections at or above MinScore, so a detection whose score
// merely crossed MinScore is told apart from one that is gone.
type Agreement struct {
	MinScore float64 `json:"min_score"`
	// Reference and Model: detections at or above MinScore.
	Reference int `json:"reference"`
	Model     int `json:"model"`
	// Matched: pairs that both score at or above MinScore. Reference =
	// Matched + Fell + Missing; Model = Matched + Rose + Extra.
	Matched int `json:"matched"`
	// ScoreDiff is |model score - reference score| over the pairs at least
	// one of which scores at or above MinScore (Matched + Fell + Rose);
	// BoxIoU and MaskIoU are those pairs' overlaps.
	ScoreDiff Spread `json:"score_diff"`
	BoxIoU    Spread `json:"box_iou"`
	MaskIoU   Spread `json:"mask_iou"`
	// Missing: reference detections at or above MinScore with no model
	// detection at all; Fell: those whose pair scored below MinScore.
	Missing int `json:"missing"`
	Fell    int `json:"fell_below"`
	// Extra: model detections at or above MinScore that pair with no
	// reference detection; Rose: those whose pair scored below MinScore.
	Extra int `json:"extra"`
	Rose  int `json:"rose_above"`
}

// Spread summarises a list of values (zero when empty).
type Spread struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	// P10 and P90 are the 10th and 90th percentiles (nearest rank).
	P10 float64 `json:"p10"`
	P90 float64 `json:"p90"`
	Max float64 `json:"max"`
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	rank := func(p float64) float64 { return s[max(0, min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1))] }
	return Spread{Mean: sum / float64(len(s)), Min: s[0], P10: rank(0.1), P90: rank(0.9), Max: s[len(s)-1]}
}

// Compare runs the candidate, then the reference, over the same frames
// (one after the other, so each has the machine to itself) and measures
// how the candidate's detections agree with the reference's.
func Compare(ctx context.Context, cfg CompareConfig) (*CompareResult, error) {
	if !(cfg.MinScore >= 0 && cfg.MinScore < 1) {
		return nil, fmt.Errorf("compare: minimum score %v: want 0 <= s < 1", cfg.MinScore)
	}
	location, idOf, err := openFrames(cfg.Data, cfg.Images)
	if err != nil {
		return nil, err
	}
	// both manifests first: a wrong reference fails before the candidate's run
	var man [2]*infer.Manifest
	for i, spec := range []pipeline.ModelSpec{cfg.Model, cfg.Reference} {
		if man[i], err = infer.ReadManifest(spec.Bundle); err != nil {
			if i == 1 {
				// the candidate is --model; say which of the two is wrong
				return nil, fmt.Errorf("reference %w", err)
			}
			return nil, err
		}
	}
	things := man[0].Things
	if !slices.Equal(things, man[1].Things) {
		return nil, fmt.Errorf("%s and %s have different classes: nothing to compare", cfg.Model.Bundle, cfg.Reference.Bundle)
	}
	res := &CompareResult{}
	sizes := map[int64][2]int{}
	for i, spec := range []pipeline.ModelSpec{cfg.Model, cfg.Reference} {
		run, err := detectFrames(ctx, spec, location, idOf, pipeline.Schedule{}, nil, sizes, cfg.Log, 0)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			res.Model = *run
		} else {
			res.Reference = *run
		}
	}
	res.Images = len(sizes)
	if res.Images == 0 {
		return nil, fmt.Errorf("%s: no frames to compare on", cfg.Data)
	}
	res.Agreement, err = agree(res.Model.Detections, res.Reference.Detections, cfg.MinScore)
	if err != nil {
		return nil, err
	}
	gt := referenceTruth(res.Reference.Detections, sizes, things, cfg.MinScore)
	for _, typ := range []coco.IoUType{coco.IoUBBox, coco.IoUSegm} {
		st, err := coco.Evaluate(gt, res.Model.Detections, typ)
		if err != nil {
			return nil, fmt.Errorf("evaluate %s against the reference: %w", typ, err)
		}
		res.Stats = append(res.Stats, TypeStats{typ, st})
	}
	return res, nil
}

// openFrames is where Compare reads frames and how it numbers them: a COCO
// instances JSON's pictures by its ids, else a video's or a folder's frames
// in order from 1.
func openFrames(data, images string) (string, func(*decode.Frame) (int64, bool), error) {
	if strings.HasSuffix(strings.ToLower(data), ".json") {
		_, location, idOf, err := openEvalData(data, images)
		return location, idOf, err
	}
	if images != "" {
		return "", nil, fmt.Errorf("--images is for a COCO instances JSON, not %s", data)
	}
	if _, err := os.Stat(data); err != nil {
		return "", nil, err
	}
	return data, func(f *decode.Frame) (int64, bool) { return f.Seq + 1, true }, nil
}

// detectFrames runs one model over the frames at location through a run's
// pipeline with one sink, so that a schedule picks, tracks and propagates
// exactly as a run does. Its detections' category ids are class index + 1;
// it records each frame's size in sizes. check, when set, sees the model's
// thing classes before any frame runs; total (0: unknown) sizes the
// progress line.
func detectFrames(ctx context.Context, spec pipeline.ModelSpec, location string, idOf func(*decode.Frame) (int64, bool),
	sch pipeline.Schedule, check func(things []string) error, sizes map[int64][2]int, log io.Writer, total int64) (*ModelRun, error) {
	b, md, err := spec.Load()
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if check != nil {
		if err := check(b.Manifest.Things); err != nil {
			return nil, err
		}
	}
	run := &ModelRun{Bundle: spec.Bundle, Views: len(md.Views())}
	var done atomic.Int64
	start := time.Now()
	progress := pipeline.StartProgress(log, &done, total)
	src, err := pipeline.OpenSource(location, 0)
	if err != nil {
		progress()
		return nil, err
	}
	td := &timedDetector{d: md}
	collect := sinkFunc(func(o *pipeline.Output) error {
		id, ok := idOf(o.Frame)
		if !ok {
			return nil // a picture of the folder that the set does not list
		}
		sizes[id] = [2]int{o.Frame.Width, o.Frame.Height}
		done.Add(1)
		for _, d := range o.Result.Detections {
			rle, err := coco.EncodeRegion(d.Mask.X, d.Mask.Y, d.Mask.W, d.Mask.H, d.Mask.Bits, o.Frame.Width, o.Frame.Height)
			if err != nil {
				return fmt.Errorf("image %d: %w", id, err)
			}
			run.Detections = append(run.Detections, coco.Detection{
				ImageID: id, CategoryID: int64(d.Label) + 1, Score: float64(d.Score),
				BBox:         []float64{float64(d.Box.X1), float64(d.Box.Y1), float64(d.Box.Width()), float64(d.Box.Height())},
				Segmentation: &coco.Segmentation{RLE: &rle},
			})
		}
		return nil
	})
	err = pipeline.Run(ctx, ctx, pipeline.Config{
		Sources: []pipeline.Source{src}, Detector: td, Schedules: []pipeline.Schedule{sch},
		Sinks: func(string) ([]pipeline.Sink, error) { return []pipeline.Sink{collect}, nil },
	})
	progress()
	if err != nil {
		return nil, err
	}
	run.Elapsed, run.Timings, run.Keyframes = time.Since(start), td.tm, td.frames
	return run, nil
}

// agree pairs the model's detections with the reference's (see Agreement).
func agree(model, ref []coco.Detection, minScore float64) (Agreement, error) {
	a := Agreement{MinScore: minScore}
	type key struct{ img, cat int64 }
	group := func(ds []coco.Detection) map[key][]coco.Detection {
		g := map[key][]coco.Detection{}
		for _, d := range ds {
			k := key{d.ImageID, d.CategoryID}
			g[k] = append(g[k], d)
		}
		return g
	}
	mg, rg := group(model), group(ref)
	var scoreDiff, boxIoU, maskIoU []float64
	for k, rs := range rg {
		ms := mg[k]
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].Score > rs[j].Score })
		sort.SliceStable(ms, func(i, j int) bool { return ms[i].Score > ms[j].Score })
		ious, err := coco.BoxIoU(boxes(ms), boxes(rs), nil)
		if err != nil {
			return a, err
		}
		used := make([]bool, len(ms))
		for r := range rs {
			best, bestIoU := -1, MatchIoU
			for m := range ms {
				if !used[m] && ious[m][r] >= bestIoU {
					best, bestIoU = m, ious[m][r]
				}
			}
			rAbove := rs[r].Score >= minScore
			if best < 0 {
				if rAbove {
					a.Missing++
				}
				continue
			}
			used[best] = true
			m := ms[best]
			mAbove := m.Score >= minScore
			switch {
			case rAbove && !mAbove:
				a.Fell++
			case mAbove && !rAbove:
				a.Rose++
			}
			if !rAbove && !mAbove {
				continue
			}
			if rAbove && mAbove {
				a.Matched++
			}
			scoreDiff = append(scoreDiff, math.Abs(m.Score-rs[r].Score))
			boxIoU = append(boxIoU, bestIoU)
			mi, err := coco.IoU([]coco.RLE{*m.Segmentation.RLE}, []coco.RLE{*rs[r].Segmentation.RLE}, nil)
			if err != nil {
				return a, err
			}
			maskIoU = append(maskIoU, mi[0][0])
		}
		for m := range ms {
			if !used[m] && ms[m].Score >= minScore {
				a.Extra++
			}
		}
	}
	for k, ms := range mg {
		if _, ok := rg[k]; ok {
			continue
		}
		for _, m := range ms {
			if m.Score >= minScore {
				a.Extra++
			}
		}
	}
	for _, d := range ref {
		if d.Score >= minScore {
			a.Reference++
		}
	}
	for _, d := range model {
		if d.Score >= minScore {
			a.Model++
		}
	}
	a.ScoreDiff, a.BoxIoU, a.MaskIoU = spread(scoreDiff), spread(boxIoU), spread(maskIoU)
	return a, nil
}

func boxes(ds []coco.Detection) [][4]float64 {
	out := make([][4]float64, len(ds))
	for i, d := range ds {
		copy(out[i][:], d.BBox)
	}
	return out
}

// referenceTruth makes the reference's detections at or above minScore a
// COCO ground truth (area: the mask's, as COCO's own annotations give it).
func referenceTruth(ref []coco.Detection, sizes map[int64][2]int, things []string, minScore float64) *coco.Dataset {
	gt := &coco.Dataset{}
	for i, name := range things {
		gt.Categories = append(gt.Categories, coco.Category{ID: int64(i) + 1, Name: name})
	}
	ids := make([]int64, 0, len(sizes))
	for id := range sizes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		gt.Images = append(gt.Images, coco.Image{ID: id, Width: sizes[id][0], Height: sizes[id][1]})
	}
	for _, d := range ref {
		if d.Score < minScore {
			continue
		}
		gt.Annotations = append(gt.Annotations, coco.Annotation{
			ID: int64(len(gt.Annotations)) + 1, ImageID: d.ImageID, CategoryID: d.CategoryID,
			BBox: d.BBox, Area: float64(d.Segmentation.RLE.Area()), Segmentation: d.Segmentation,
		})
	}
	return gt
}
