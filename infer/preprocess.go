package infer

import (
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"
)

// Scale is a test scale as mmdetection writes it (e.g. 1333x800): a frame is
// resized, keeping its aspect ratio, to the largest size whose long side is
// at most Long and whose short side is at most Short.
type Scale struct {
	Long, Short int
}

// View is one test-time-augmentation view of a frame: a scale and whether
// the frame is mirrored left-right.
type View struct {
	Scale Scale
	Flip  bool
}

// PixelOrder says how the channels of a packed 8-bit frame are ordered.
type PixelOrder int

const (
	RGB PixelOrder = iota
	// BGR is OpenCV's own order (gocv.IMRead, most cameras through OpenCV).
	BGR
)

// Normalization is the per-channel (R, G, B) mean and standard deviation the
// model was trained with: input = (pixel - Mean) / Std.
type Normalization struct {
	Mean, Std [3]float32
}

// Prepared tells where one view of a frame sits in a batch tensor and how it
// maps back to the frame.
type Prepared struct {
	// Width, Height: the resized picture, before padding.
	Width, Height int
	// ScaleX, ScaleY: resized size / frame size per axis.
	ScaleX, ScaleY float64
	Flip           bool
}

// ResizedSize returns the size of a w x h frame resized to s, computed as
// mmdetection's rescale does (factor = min(Long/long side, Short/short side),
// each side rounded to the nearest pixel).
func ResizedSize(w, h int, s Scale) (rw, rh int) {
	long, short := max(w, h), min(w, h)
	f := math.Min(float64(s.Long)/float64(long), float64(s.Short)/float64(short))
	rw = max(1, int(float64(w)*f+0.5))
	rh = max(1, int(float64(h)*f+0.5))
	return rw, rh
}

// PaddedSize rounds w and h up to multiples of divisor.
func PaddedSize(w, h, divisor int) (int, int) {
	if divisor <= 1 {
		return w, h
	}
	return (w + divisor - 1) / divisor * divisor, (h + divisor - 1) / divisor * divisor
}

// Preprocess writes view v of frame src (8-bit, 3 channels, in the given
// channel order) into dst as a normalised RGB CHW tensor of padW x padH,
// zero-padded right and bottom as the model was trained. dst must hold
// 3*padW*padH floats and may be a slice of a larger batch tensor. src is not
// modified; every intermediate Mat is freed before return.
func Preprocess(src gocv.Mat, order PixelOrder, v View, n Normalization, padW, padH int, dst []float32) (Prepared, error) {
	w, h := src.Cols(), src.Rows()
	if src.Empty() || w == 0 || h == 0 {
		return Prepared{}, fmt.Errorf("preprocess: empty frame")
	}
	if src.Type() != gocv.MatTypeCV8UC3 {
		return Prepared{}, fmt.Errorf("preprocess: frame type %v, want 8-bit 3-channel", src.Type())
	}
	if v.Scale.Long <= 0 || v.Scale.Short <= 0 {
		return Prepared{}, fmt.Errorf("preprocess: invalid scale %dx%d", v.Scale.Long, v.Scale.Short)
	}
	rw, rh := ResizedSize(w, h, v.Scale)
	if rw > padW || rh > padH {
		return Prepared{}, fmt.Errorf("preprocess: resized frame %dx%d does not fit the %dx%d tensor", rw, rh, padW, padH)
	}
	if len(dst) != 3*padW*padH {
		return Prepared{}, fmt.Errorf("preprocess: tensor holds %d floats, want %d", len(dst), 3*padW*padH)
	}

	resized := gocv.NewMat()
	defer resized.Close()
	gocv.Resize(src, &resized, image.Pt(rw, rh), 0, 0, gocv.InterpolationLinear)
	cur := resized
	if v.Flip {
		flipped := gocv.NewMat()
		defer flipped.Close()
		gocv.Flip(cur, &flipped, 1)
		cur = flipped
	}
	if order == BGR {
		rgb := gocv.NewMat()
		defer rgb.Close()
		gocv.CvtColor(cur, &rgb, gocv.ColorBGRToRGB)
		cur = rgb
	}
	pix, err := cur.DataPtrUint8()
	if err != nil {
		return Prepared{}, fmt.Errorf("preprocess: %w", err)
	}
	stride := int(cur.Step())
	var inv [3]float32
	for c := 0; c < 3; c++ {
		inv[c] = 1 / n.Std[c]
	}
	plane := padW * padH
	clear(dst)
	for y := 0; y < rh; y++ {
		row := pix[y*stride : y*stride+rw*3]
		r := dst[y*padW : y*padW+rw]
		g := dst[plane+y*padW : plane+y*padW+rw]
		b := dst[2*plane+y*padW : 2*plane+y*padW+rw]
		for x := 0; x < rw; x++ {
			r[x] = (float32(row[3*x]) - n.Mean[0]) * inv[0]
			g[x] = (float32(row[3*x+1]) - n.Mean[1]) * inv[1]
			b[x] = (float32(row[3*x+2]) - n.Mean[2]) * inv[2]
		}
	}
	return Prepared{
		Width: rw, Height: rh,
		ScaleX: float64(rw) / float64(w), ScaleY: float64(rh) / float64(h),
		Flip: v.Flip,
	}, nil
}
