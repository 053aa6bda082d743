package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/htcstream/htcstream/pipeline"
	"github.com/htcstream/htcstream/pipeline/evaluate"
)

func evalCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "eval --data (INSTANCES.json | VIDEO.mp4) [flags]\n"+
		"       htcstream eval --model CANDIDATE --reference BUNDLE --data (VIDEO | FOLDER | INSTANCES.json) [flags]", stderr)
	var mf modelFlags
	mf.register(fs, 0)
	data := fs.String("data", "", "COCO instances JSON (images in --images), or a video with its ground truth beside it as .json")
	images := fs.String("images", "", "image folder of a COCO instances JSON (default: ROOT/images/SPLIT for ROOT/annotations/instances_SPLIT.json, else the JSON's folder)")
	out := fs.String("out", "", "write the stats (and the run's settings) as JSON here")
	results := fs.String("results", "", "also write the detections as a COCO results JSON here")
	interval := fs.String("interval", "1", "the model sees every Nth frame and the tracker carries the masks to the others, as in run")
	timing := fs.String("timing", "", "frames between keyframes: smooth (interpolated between the keyframes on both sides; the default for files) or live (carried forward from the last keyframe only)")
	reference := fs.String("reference", "", "instead of ground truth: a bundle to compare --model with on the same frames (e.g. the float bundle of an INT8 one); --data may then be any video or picture folder")
	refScore := fs.Float64("reference-score", 0.3, "with --reference: detections scoring at least this are compared, and the reference's are the ground truth of --model's AP")
	prop := fs.String("propagation", "", "how objects move on the frames the model skips, as in run: flow (optical flow on each object's region; the default) or box (the tracker's prediction, or a straight line between keyframes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("%w: want --data and no other arguments", errUsage)
	}
	spec, err := mf.spec()
	if err != nil {
		return err
	}
	if *reference != "" {
		if *interval != "1" || *timing != "" {
			return fmt.Errorf("%w: --reference compares the models on every frame (no --interval or --timing)", errUsage)
		}
		if !(*refScore >= 0 && *refScore < 1) {
			return fmt.Errorf("%w: --reference-score %v: want 0 <= s < 1", errUsage, *refScore)
		}
		ref := spec
		ref.Bundle = *reference
		return compareCmd(evaluate.CompareConfig{Model: spec, Reference: ref, Data: *data, Images: *images,
			MinScore: *refScore, Log: stderr}, *out, *results, stdout)
	}
	iv, err := pipeline.ParseInterval(*interval)
	if err != nil {
		return err
	}
	sch := pipeline.Schedule{Interval: iv, Timing: pipeline.Timing(*timing), Propagation: pipeline.Propagation(*prop)}
	r, err := evaluate.Eval(context.Background(), evaluate.EvalConfig{Model: spec, Data: *data, Images: *images, Log: stderr,
		Schedule: sch})
	if err != nil {
		return err
	}
	report := map[string]any{
		"model": r.Bundle, "data": *data, "images": r.Images, "detections": len(r.Detections),
		"views": r.Views, "seconds_per_image": r.Elapsed.Seconds() / float64(r.Images),
		"interval": iv.String(), "timing": *timing, "propagation": *prop, "keyframes": r.Keyframes,
	}
	for _, s := range r.Stats {
		fmt.Fprintf(stdout, "Evaluate annotation type *%s*\n%s\n", s.Type, s.Stats)
		report[string(s.Type)] = s.Stats
	}
	n := float64(r.Images)
	fmt.Fprintf(stdout, "%d images, %d views each, %.1f ms/image (graphs %.1f ms, roi align %.1f ms, other Go steps %.1f ms); interval %s: the model ran on %d frames\n",
		r.Images, r.Views, ms(r.Elapsed)/n, ms(r.Timings.Graph())/n, ms(r.Timings.RoIAlign)/n, ms(r.Timings.Go())/n, iv, r.Keyframes)
	if *results != "" {
		if err := writeJSON(*results, r.Detections); err != nil {
			return err
		}
	}
	if *out != "" {
		if err := writeJSON(*out, report); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// compareCmd prints how --model's detections agree with --reference's on
// the same frames, and --model's AP with the reference's as ground truth.
func compareCmd(cfg evaluate.CompareConfig, out, results string, stdout io.Writer) error {
	r, err := evaluate.Compare(context.Background(), cfg)
	if err != nil {
		return err
	}
	a := r.Agreement
	n := float64(r.Images)
	for _, m := range []struct {
		role string
		run  evaluate.ModelRun
	}{{"model", r.Model}, {"reference", r.Reference}} {
		fmt.Fprintf(stdout, "%-9s %s: %.1f ms/image (graphs %.1f ms), %.1f detections/image at score >= %g\n", m.role, m.run.Bundle,
			ms(m.run.Elapsed)/n, ms(m.run.Timings.Graph())/n, float64(m.run.Above(a.MinScore))/n, a.MinScore)
	}
	fmt.Fprintf(stdout, "%d images; detections at score >= %g: reference %d, model %d\n", r.Images, a.MinScore, a.Reference, a.Model)
	fmt.Fprintf(stdout, "matched (same class, box IoU >= %g, both at score >= %g): %d (%.1f%% of the reference's)\n",
		evaluate.MatchIoU, a.MinScore, a.Matched, pct(a.Matched, a.Reference))
	fmt.Fprintf(stdout, "pairs with either at score >= %g: %d\n", a.MinScore, a.Matched+a.Fell+a.Rose)
	fmt.Fprintf(stdout, "  |score difference| mean %.4f, p90 %.4f, max %.4f\n", a.ScoreDiff.Mean, a.ScoreDiff.P90, a.ScoreDiff.Max)
	fmt.Fprintf(stdout, "  box IoU  mean %.4f, p10 %.4f, min %.4f\n", a.BoxIoU.Mean, a.BoxIoU.P10, a.BoxIoU.Min)
	fmt.Fprintf(stdout, "  mask IoU mean %.4f, p10 %.4f, min %.4f\n", a.MaskIoU.Mean, a.MaskIoU.P10, a.MaskIoU.Min)
	fmt.Fprintf(stdout, "missing (reference's, no model detection): %d; fell below %g: %d\n", a.Missing, a.MinScore, a.Fell)
	fmt.Fprintf(stdout, "extra (model's, no reference detection): %d; rose above %g: %d\n", a.Extra, a.MinScore, a.Rose)
	report := map[string]any{
		"model": r.Model.Bundle, "reference": r.Reference.Bundle, "data": cfg.Data, "images": r.Images,
		"agreement": a, "seconds_per_image": map[string]float64{"model": r.Model.Elapsed.Seconds() / n, "reference": r.Reference.Elapsed.Seconds() / n},
	}
	for _, s := range r.Stats {
		fmt.Fprintf(stdout, "Evaluate annotation type *%s* (the reference's detections at score >= %g as ground truth)\n%s\n", s.Type, a.MinScore, s.Stats)
		report[string(s.Type)] = s.Stats
	}
	if results != "" {
		if err := writeJSON(results, r.Model.Detections); err != nil {
			return err
		}
	}
	if out != "" {
		return writeJSON(out, report)
	}
	return nil
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
