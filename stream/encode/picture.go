package encode

import "image"

// RGBImage is a w x h picture of packed RGB24 (as frames travel through
// htcstream) as an opaque image.RGBA, for the still encoders of the
// standard library (snapshots' JPEG, calibration frames' PNG). rgb must
// hold w*h*3 bytes.
func RGBImage(w, h int, rgb []byte) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i, j := 0, 0; i+2 < len(rgb) && j+3 < len(img.Pix); i, j = i+3, j+4 {
		img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = rgb[i], rgb[i+1], rgb[i+2], 0xff
	}
	return img
}
