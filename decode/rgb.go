package decode

// #cgo pkg-config: libswscale libavutil
// #include <libswscale/swscale.h>
// #include <libavutil/imgutils.h>
// #include <libavutil/pixfmt.h>
//
// // to_rgb converts one picture, packed without row padding in src, to
// // packed RGB24 in dst; the swscale context is cached across calls and
// // rebuilt only when the size or pixel format changes.
// static int to_rgb(struct SwsContext **ctx, const uint8_t *src, int w, int h, int fmt, uint8_t *dst) {
//   uint8_t *sd[4]; int sl[4];
//   if (av_image_fill_arrays(sd, sl, src, fmt, w, h, 1) < 0) return -2;
//   // JPEG's "yuvj" formats are plain YUV with full range; swscale wants
//   // them said that way (and warns on every frame otherwise).
//   int full = 0;
//   switch (fmt) {
//   case AV_PIX_FMT_YUVJ420P: fmt = AV_PIX_FMT_YUV420P; full = 1; break;
//   case AV_PIX_FMT_YUVJ422P: fmt = AV_PIX_FMT_YUV422P; full = 1; break;
//   case AV_PIX_FMT_YUVJ444P: fmt = AV_PIX_FMT_YUV444P; full = 1; break;
//   case AV_PIX_FMT_YUVJ440P: fmt = AV_PIX_FMT_YUV440P; full = 1; break;
//   }
//   *ctx = sws_getCachedContext(*ctx, w, h, fmt, w, h, AV_PIX_FMT_RGB24,
//                               SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
//   if (!*ctx) return -1;
//   if (full) {
//     int *inv, srcRange, *tbl, dstRange, b, c, s;
//     if (sws_getColorspaceDetails(*ctx, &inv, &srcRange, &tbl, &dstRange, &b, &c, &s) >= 0)
//       sws_setColorspaceDetails(*ctx, inv, 1, tbl, dstRange, b, c, s);
//   }
//   uint8_t *dd[4] = {dst, NULL, NULL, NULL};
//   int dl[4] = {w * 3, 0, 0, 0};
//   return sws_scale(*ctx, (const uint8_t * const *)sd, sl, 0, h, dd, dl);
// }
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// swsSlack is the spare room left after swscale's source and destination.
const swsSlack = 64

// rgbConverter owns one swscale context.
type rgbConverter struct {
	ctx    *C.struct_SwsContext
	packed []byte // reused: the source picture without row padding
}

// convert returns the frame's picture as packed RGB24 in a new slice.
func (c *rgbConverter) convert(f *astiav.Frame) ([]byte, error) {
	w, h := f.Width(), f.Height()
	size, err := f.ImageBufferSize(1)
	if err != nil {
		return nil, fmt.Errorf("picture size: %w", err)
	}
	// swscale's vector loops may read and write a few bytes past a plane's
	// end; spare room keeps them inside Go memory we own.
	if cap(c.packed) < size+swsSlack {
		c.packed = make([]byte, size+swsSlack)
	}
	c.packed = c.packed[:size]
	if _, err := f.ImageCopyToBuffer(c.packed, 1); err != nil {
		return nil, fmt.Errorf("copy picture: %w", err)
	}
	rgb := make([]byte, w*h*3, w*h*3+swsSlack)
	rc := C.to_rgb(&c.ctx, (*C.uint8_t)(unsafe.Pointer(&c.packed[0])), C.int(w), C.int(h),
		C.int(f.PixelFormat()), (*C.uint8_t)(unsafe.Pointer(&rgb[0])))
	if rc != C.int(h) {
		return nil, fmt.Errorf("swscale %s %dx%d to rgb24 failed (code %d)", f.PixelFormat().Name(), w, h, int(rc))
	}
	return rgb, nil
}

func (c *rgbConverter) close() {
	if c.ctx != nil {
		C.sws_freeContext(c.ctx)
		c.ctx = nil
	}
}
