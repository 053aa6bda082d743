package main

import (
	"context"
	"fmt"
	"image"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/pipeline"
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
	var rw, rh int
	if *size != "" {
		if _, err := fmt.Sscanf(*size, "%dx%d", &rw, &rh); err != nil || rw <= 0 || rh <= 0 {
			return fmt.Errorf("%w: --size %q is not WxH", errUsage, *size)
		}
	}
	b, md, err := mf.load()
	if err != nil {
		return err
	}
	defer b.Close()
	stopProfile := func() {}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		stopProfile = pprof.StopCPUProfile
		defer stopProfile()
	}

	var (
		total cascade.Timings
		wall  time.Duration
		n     int
		w, h  int
		dets  int
	)
	err = pipeline.ReadSource(context.Background(), fs.Arg(0), *frames+1, func(f *decode.Frame) error {
		img := cascade.Image{Width: f.Width, Height: f.Height, Pix: f.RGB, Order: infer.RGB}
		if rw > 0 {
			var err error
			if img, err = resized(img, rw, rh); err != nil {
				return err
			}
		}
		w, h = img.Width, img.Height
		t0 := time.Now()
		res, tm, err := md.Detect([]cascade.Image{img})
		if err != nil {
			return fmt.Errorf("frame %d: %w", f.Seq, err)
		}
		if n > 0 { // the first frame warms up sessions and allocations
			wall += time.Since(t0)
			total.Add(tm)
			dets += len(res[0].Detections)
		}
		n++
		return nil
	})
	if err != nil {
		return err
	}
	stopProfile()
	if n < 2 {
		return fmt.Errorf("%s: fewer than 2 frames", fs.Arg(0))
	}
	k := float64(n - 1)
	model := total.Model()
	goSteps := total.Go()
	fmt.Fprintf(stdout, "model %s, %dx%d frames, %d views, provider %s, %d frames timed, %.1f detections/frame\n",
		mf.bundle, w, h, len(md.Views()), b.Provider(), n-1, float64(dets)/k)
	fmt.Fprintf(stdout, "%-22s %10s\n", "step", "ms/frame")
	for _, row := range []struct {
		name string
		d    time.Duration
	}{
		{"preprocess (Go+OpenCV)", total.Preprocess}, {"backbone graph", total.Backbone}, {"proposals (Go)", total.Proposals},
		{"roi align (Go)", total.RoIAlign}, {"box head graphs", total.BBoxHeads}, {"ensemble+merge (Go)", total.Merge}, {"mask_heads graph", total.MaskHeads},
		{"mask paste (Go)", total.Paste}, {"total (wall)", wall},
	} {
		fmt.Fprintf(stdout, "%-22s %10.2f\n", row.name, ms(row.d)/k)
	}
	fmt.Fprintf(stdout, "Go steps / model time (graphs + roi align): %.1f%% (preprocess excluded: %.1f%%)\n",
		100*float64(goSteps)/float64(model), 100*float64(goSteps-total.Preprocess)/float64(model))
	return nil
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
