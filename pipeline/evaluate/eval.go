package evaluate

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/pipeline"
)

// EvalConfig is what Eval scores: a model over a data set.
type EvalConfig struct {
	Model pipeline.ModelSpec
	// Data is a COCO instances JSON (its pictures in Images), or a video
	// with its ground truth beside it as .json (frame i is image id i+1).
	Data string
	// Images is the picture folder of an instances JSON; empty:
	// ROOT/images/SPLIT for ROOT/annotations/instances_SPLIT.json, else
	// the JSON's folder.
	Images string
	// Schedule is the keyframe policy, as a run's (zero: the model on
	// every frame); the tracker carries the detections to the frames the
	// model skips.
	Schedule pipeline.Schedule
	// Log hears a warning when the set lists pictures that were not read;
	// on a terminal it shows a progress line too.
	Log io.Writer
}

// EvalResult is what Eval found.
type EvalResult struct {
	// Bundle is the model's bundle directory (the default one, found, when
	// the spec named none).
	Bundle string
	// Images were read and scored; Listed is how many the set lists (the
	// others count as missed).
	Images, Listed int
	Views          int
	// Keyframes is how many frames the model ran on.
	Keyframes int
	// Detections are every image's, as a COCO results file holds them.
	Detections []coco.Detection
	// Stats are the bbox and segm scores, in that order.
	Stats   []TypeStats
	Elapsed time.Duration
	Timings cascade.Timings
}

// TypeStats is COCO's summary for one IoU type.
type TypeStats struct {
	Type  coco.IoUType
	Stats coco.Stats
}

// Eval runs the model over every picture of the set, through the same
// sources as a run reads, and scores the detections with COCO's metrics.
func Eval(ctx context.Context, cfg EvalConfig) (*EvalResult, error) {
	gt, location, idOf, err := openEvalData(cfg.Data, cfg.Images)
	if err != nil {
		return nil, err
	}
	var catIDs []int64
	cats := func(things []string) error {
		var err error
		if catIDs, err = categoryMap(gt, things); err != nil {
			return fmt.Errorf("%s: %w", cfg.Data, err)
		}
		return nil
	}
	sizes := map[int64][2]int{}
	run, err := detectFrames(ctx, cfg.Model, location, idOf, cfg.Schedule, cats, sizes, cfg.Log, int64(len(gt.Images)))
	if err != nil {
		return nil, err
	}
	r := &EvalResult{Bundle: cfg.Model.Bundle, Listed: len(gt.Images), Views: run.Views, Images: len(sizes),
		Detections: run.Detections, Timings: run.Timings, Keyframes: run.Keyframes, Elapsed: run.Elapsed}
	for i := range r.Detections {
		r.Detections[i].CategoryID = catIDs[r.Detections[i].CategoryID-1]
	}
	if r.Images < r.Listed && cfg.Log != nil {
		// images it could not read count as found nothing: say so
		fmt.Fprintf(cfg.Log, "htcstream eval: %d of the %d images of %s were read; the others count as missed\n", r.Images, r.Listed, cfg.Data)
	}
	if r.Images == 0 {
		return nil, fmt.Errorf("%s: no images to evaluate", cfg.Data)
	}
	for _, typ := range []coco.IoUType{coco.IoUBBox, coco.IoUSegm} {
		st, err := coco.Evaluate(gt, r.Detections, typ)
		if err != nil {
			return nil, fmt.Errorf("evaluate %s: %w", typ, err)
		}
		r.Stats = append(r.Stats, TypeStats{typ, st})
	}
	return r, nil
}

// categoryMap pairs the model's thing classes with the dataset's categories
// in id order (the training module's convention) and checks their names
// agree, so a model is never scored against another label set.
func categoryMap(gt *coco.Dataset, things []string) ([]int64, error) {
	cats := append([]coco.Category(nil), gt.Categories...)
	sort.Slice(cats, func(i, j int) bool { return cats[i].ID < cats[j].ID })
	if len(cats) != len(things) {
		return nil, fmt.Errorf("the dataset has %d categories, the model %d classes", len(cats), len(things))
	}
	ids := make([]int64, len(cats))
	for i, c := range cats {
		if c.Name != things[i] {
			return nil, fmt.Errorf("category %d is %q in the dataset but class %d is %q in the model", c.ID, c.Name, i, things[i])
		}
		ids[i] = c.ID
	}
	return ids, nil
}

// openEvalData opens a COCO instances JSON with its image folder, or a
// video with per-frame ground truth beside it (frame i is image id i+1).
// It returns the ground truth, where the frames are (a folder or the video)
// and how a frame is matched to its image id.
func openEvalData(data, images string) (*coco.Dataset, string, func(*decode.Frame) (int64, bool), error) {
	if strings.HasSuffix(strings.ToLower(data), ".json") {
		gt, err := coco.LoadDataset(data)
		if err != nil {
			return nil, "", nil, err
		}
		if images == "" {
			images = defaultImageDir(data)
		}
		if st, err := os.Stat(images); err != nil || !st.IsDir() {
			return nil, "", nil, fmt.Errorf("images of %s: %s is not a folder (--images)", data, images)
		}
		ids := make(map[string]int64, len(gt.Images))
		for _, im := range gt.Images {
			ids[filepath.Base(im.FileName)] = im.ID
		}
		return gt, images, func(f *decode.Frame) (int64, bool) {
			id, ok := ids[filepath.Base(f.Name)]
			return id, ok
		}, nil
	}
	gtPath := strings.TrimSuffix(data, filepath.Ext(data)) + ".json"
	gt, err := coco.LoadDataset(gtPath)
	if err != nil {
		return nil, "", nil, fmt.Errorf("ground truth of %s: %w", data, err)
	}
	if _, err := os.Stat(data); err != nil {
		return nil, "", nil, err
	}
	return gt, data, func(f *decode.Frame) (int64, bool) { return f.Seq + 1, true }, nil
}

// defaultImageDir follows the COCO layout ROOT/annotations/instances_SPLIT.json
// -> ROOT/images/SPLIT (the synthetic set's too), else the JSON's folder.
func defaultImageDir(ann string) string {
	dir, base := filepath.Split(ann)
	if split, ok := strings.CutPrefix(strings.TrimSuffix(base, ".json"), "instances_"); ok && filepath.Base(filepath.Clean(dir)) == "annotations" {
		return filepath.Join(filepath.Dir(filepath.Clean(dir)), "images", split)
	}
	return filepath.Clean(dir)
}

// timedDetector adds up the model's timings and counts the frames it saw.
// The pipeline calls it from one goroutine.
type timedDetector struct {
	d      pipeline.Detector
	tm     cascade.Timings
	frames int
}

func (t *timedDetector) Detect(frames []cascade.Image) ([]cascade.Result, cascade.Timings, error) {
	res, tm, err := t.d.Detect(frames)
	t.tm.Add(tm)
	t.frames += len(frames)
	return res, tm, err
}

// sinkFunc is a Sink that calls itself for every output.
type sinkFunc func(o *pipeline.Output) error

func (f sinkFunc) Write(o *pipeline.Output) error { return f(o) }
func (f sinkFunc) Close() error                   { return nil }
