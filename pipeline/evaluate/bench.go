package evaluate

import (
	"context"
	"fmt"
	"image"
	"io"
	"runtime/pprof"
	"time"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/pipeline"
)

// BenchConfig is what Bench times: a model over the first frames of a
// source.
type BenchConfig struct {
	Model  pipeline.ModelSpec
	Source string
	// Frames are timed after one warm-up frame.
	Frames int
	// Width and Height, when set, resize every frame first, to time a
	// frame size the source does not have.
	Width, Height int
	// CPUProfile, when set, receives a Go CPU profile of the frames (after
	// the model is loaded).
	CPUProfile io.Writer
}

// BenchResult is the time each step of the model took over the timed
// frames.
type BenchResult struct {
	Bundle, Provider string
	Views            int
	// Threads is each graph's intra-op threads (0 in the spec: the cores
	// this process may use).
	Threads int
	// Width and Height are the frames' size as the model got them.
	Width, Height int
	// Timed frames, and the detections they had.
	Timed, Detections int
	// Steps are summed over the timed frames; Wall is their Detect calls'
	// time.
	Steps cascade.Timings
	Wall  time.Duration
}

// Bench runs the model over cfg.Frames+1 frames of the source and times
// every frame but the first, which warms up sessions and allocations.
func Bench(ctx context.Context, cfg BenchConfig) (*BenchResult, error) {
	b, md, err := cfg.Model.Load()
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	r := &BenchResult{Bundle: cfg.Model.Bundle, Provider: string(b.Provider()), Views: len(md.Views()),
		Threads: infer.IntraOpThreads(cfg.Model.Threads)}
	n := 0
	err = pipeline.ReadSource(ctx, cfg.Source, cfg.Frames+1, func(f *decode.Frame) error {
		img := cascade.Image{Width: f.Width, Height: f.Height, Pix: f.RGB, Order: infer.RGB}
		if cfg.Width > 0 {
			var err error
			if img, err = resized(img, cfg.Width, cfg.Height); err != nil {
				return err
			}
		}
		r.Width, r.Height = img.Width, img.Height
		t0 := time.Now()
		res, tm, err := md.Detect([]cascade.Image{img})
		if err != nil {
			return fmt.Errorf("frame %d: %w", f.Seq, err)
		}
		if n > 0 { // the first frame warms up sessions and allocations
			r.Wall += time.Since(t0)
			r.Steps.Add(tm)
			r.Detections += len(res[0].Detections)
		}
		n++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n < 2 {
		return nil, fmt.Errorf("%s: fewer than 2 frames", cfg.Source)
	}
	r.Timed = n - 1
	return r, nil
}

// resized returns img scaled to w x h with OpenCV.
func resized(img cascade.Image, w, h int) (cascade.Image, error) {
	src, err := gocv.NewMatFromBytes(img.Height, img.Width, gocv.MatTypeCV8UC3, img.Pix)
	if err != nil {
		return img, err
	}
	defer src.Close()
	dst := gocv.NewMat()
	defer dst.Close()
	gocv.Resize(src, &dst, image.Pt(w, h), 0, 0, gocv.InterpolationLinear)
	return cascade.Image{Width: w, Height: h, Pix: dst.ToBytes(), Order: img.Order}, nil
}
