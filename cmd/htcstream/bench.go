package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/htcstream/htcstream/pipeline/evaluate"
)

func benchCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", "bench [flags] VIDEO", stderr)
	var mf modelFlags
	mf.register(fs, 0)
	frames := fs.Int("frames", 20, "frames to time (after one warm-up frame)")
	size := fs.String("size", "", "resize the video's frames to WxH first (e.g. 1920x1080), to time a frame size")
	profile := fs.String("cpuprofile", "", "write a Go CPU profile of the timed frames to FILE (go tool pprof; the graphs show as cgo calls)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *frames < 1 {
		fs.Usage()
		return fmt.Errorf("%w: want one VIDEO and --frames >= 1", errUsage)
	}
	cfg := evaluate.BenchConfig{Source: fs.Arg(0), Frames: *frames}
	if *size != "" {
		if _, err := fmt.Sscanf(*size, "%dx%d", &cfg.Width, &cfg.Height); err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
			return fmt.Errorf("%w: --size %q is not WxH", errUsage, *size)
		}
	}
	var err error
	if cfg.Model, err = mf.spec(); err != nil {
		return err
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.CPUProfile = f
	}
	r, err := evaluate.Bench(context.Background(), cfg)
	if err != nil {
		return err
	}
	k := float64(r.Timed)
	total := r.Steps
	model := total.Model()
	goSteps := total.Go()
	fmt.Fprintf(stdout, "model %s, %dx%d frames, %d views, provider %s, %d intra-op threads, %d frames timed, %.1f detections/frame\n",
		r.Bundle, r.Width, r.Height, r.Views, r.Provider, r.Threads, r.Timed, float64(r.Detections)/k)
	fmt.Fprintf(stdout, "%-22s %10s\n", "step", "ms/frame")
	for _, step := range total.Steps() {
		fmt.Fprintf(stdout, "%-22s %10.2f\n", step.Title, ms(step.D)/k)
	}
	fmt.Fprintf(stdout, "%-22s %10.2f\n", "total (wall)", ms(r.Wall)/k)
	fmt.Fprintf(stdout, "Go steps / model time (graphs + roi align): %.1f%% (preprocess excluded: %.1f%%)\n",
		100*float64(goSteps)/float64(model), 100*float64(goSteps-total.Preprocess)/float64(model))
	return nil
}
