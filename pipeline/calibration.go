package pipeline

import (
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/stream/encode"
)

// ErrUnreadableVideo: what SaveCalibrationFrames was given decodes to no
// frame (not a video, or a damaged one).
var ErrUnreadableVideo = errors.New("neither a folder of images nor a readable video")

// SaveCalibrationFrames writes n frames of the video at url, spread evenly
// over it and decoded as a run decodes them, into dir as PNG: the images
// INT8 calibration (htc.quantize) reads.
func SaveCalibrationFrames(url string, n int, dir string) error {
	frames, err := decode.Sample(url, n)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnreadableVideo, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range frames {
		if err := writePNG(filepath.Join(dir, fmt.Sprintf("frame_%05d.png", f.Seq)), f); err != nil {
			return err
		}
	}
	return nil
}

func writePNG(path string, fr *decode.Frame) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, encode.RGBImage(fr.Width, fr.Height, fr.RGB)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
