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
	fs := newFlags("eval", "eval --data (INSTANCES.json | VIDEO.mp4) [flags]", stderr)
	var mf modelFlags
	mf.register(fs, 0)
	data := fs.String("data", "", "COCO instances JSON (images in --images), or a video with its ground truth beside it as .json")
	images := fs.String("images", "", "image folder of a COCO instances JSON (default: ROOT/images/SPLIT for ROOT/annotations/instances_SPLIT.json, else the JSON's folder)")
	out := fs.String("out", "", "write the stats (and the run's settings) as JSON here")
	results := fs.String("results", "", "also write the detections as a COCO results JSON here")
	interval := fs.String("interval", "1", "the model sees every Nth frame and the tracker carries the masks to the others, as in run")
	timing := fs.String("timing", "", "frames between keyframes: smooth (interpolated between the keyframes on both sides; the default for files) or live (carried forward from the last keyframe only)")
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
	iv, err := pipeline.ParseInterval(*interval)
	if err != nil {
		return err
	}
	sch := pipeline.Schedule{Interval: iv, Timing: pipeline.Timing(*timing)}
	r, err := evaluate.Eval(context.Background(), evaluate.EvalConfig{Model: spec, Data: *data, Images: *images, Log: stderr,
		Schedule: sch})
	if err != nil {
		return err
	}
	report := map[string]any{
		"model": r.Bundle, "data": *data, "images": r.Images, "detections": len(r.Detections),
		"views": r.Views, "seconds_per_image": r.Elapsed.Seconds() / float64(r.Images),
		"interval": iv.String(), "timing": *timing, "keyframes": r.Keyframes,
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
