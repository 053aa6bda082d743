package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/ingest"
)

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run [flags] SOURCE", stderr)
	maxFrames := fs.Int("max-frames", 0, "stop after this many frames (0: the whole source)")
	scaleFlag := fs.String("scale", "1333x800", "test scale LONGxSHORT that frames are prepared at")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: want exactly one SOURCE, got %d", errUsage, fs.NArg())
	}
	scale, err := parseScale(*scaleFlag)
	if err != nil {
		return fmt.Errorf("%w: --scale: %v", errUsage, err)
	}
	src, err := ingest.Parse(fs.Arg(0))
	if err != nil {
		return err
	}
	if src.Kind == ingest.Images {
		return fmt.Errorf("%s: image folders are not read yet; give a video file, stream or camera", src.Location)
	}
	dec, err := decode.Open(src.Location, decode.Options{Format: src.Format, Input: src.Options})
	if err != nil {
		return err
	}
	defer dec.Close()

	// The model's normalisation arrives with its bundle; until a bundle is
	// loaded, frames are prepared with the ImageNet statistics every
	// preset of the training module uses.
	norm := infer.Normalization{Mean: [3]float32{123.675, 116.28, 103.53}, Std: [3]float32{58.395, 57.12, 57.375}}
	var (
		frames      int
		tensor      []float32
		decodeTime  time.Duration
		prepareTime time.Duration
		last        *decode.Frame
	)
	for *maxFrames == 0 || frames < *maxFrames {
		t0 := time.Now()
		f, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if frames > 0 {
				fmt.Fprintf(stdout, "stopped after %d frames\n", frames)
			}
			return err
		}
		t1 := time.Now()
		rw, rh := infer.ResizedSize(f.Width, f.Height, scale)
		pw, ph := infer.PaddedSize(rw, rh, 32)
		if n := 3 * pw * ph; cap(tensor) < n {
			tensor = make([]float32, n)
		} else {
			tensor = tensor[:n]
		}
		mat, err := gocv.NewMatFromBytes(f.Height, f.Width, gocv.MatTypeCV8UC3, f.RGB)
		if err != nil {
			return fmt.Errorf("frame %d: %w", f.Seq, err)
		}
		_, err = infer.Preprocess(mat, infer.RGB, infer.View{Scale: scale}, norm, pw, ph, tensor)
		mat.Close()
		if err != nil {
			return fmt.Errorf("frame %d: %w", f.Seq, err)
		}
		decodeTime += t1.Sub(t0)
		prepareTime += time.Since(t1)
		frames++
		last = f
	}
	if frames == 0 {
		return fmt.Errorf("%s: no frames decoded", src.Location)
	}
	rw, rh := infer.ResizedSize(last.Width, last.Height, scale)
	fmt.Fprintf(stdout, "source      %s (%s)\n", src.Location, src.Kind)
	fmt.Fprintf(stdout, "frames      %d of %dx%d, last pts %v\n", frames, last.Width, last.Height, last.PTS)
	fmt.Fprintf(stdout, "decode      %.2f ms/frame (%.0f fps)\n", ms(decodeTime)/float64(frames), float64(frames)/decodeTime.Seconds())
	fmt.Fprintf(stdout, "prepare     %.2f ms/frame (resize to %dx%d, normalise, pad)\n", ms(prepareTime)/float64(frames), rw, rh)
	fmt.Fprintln(stdout, "segmentation: not run — this build has no model bundle loader yet")
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func parseScale(s string) (infer.Scale, error) {
	a, b, ok := strings.Cut(strings.ToLower(s), "x")
	if !ok {
		return infer.Scale{}, fmt.Errorf("%q is not LONGxSHORT", s)
	}
	long, err1 := strconv.Atoi(a)
	short, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || long <= 0 || short <= 0 {
		return infer.Scale{}, fmt.Errorf("%q is not LONGxSHORT with positive numbers", s)
	}
	if short > long {
		long, short = short, long
	}
	return infer.Scale{Long: long, Short: short}, nil
}
