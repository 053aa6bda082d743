package encode

// #cgo pkg-config: libswscale libavutil
// #include <string.h>
// #include <libswscale/swscale.h>
// #include <libavutil/frame.h>
// #include <libavutil/pixfmt.h>
//
// // frame_matches guards the pointer taken from astiav.Frame (see avFrame):
// // it must be the AVFrame whose fields astiav's setters just wrote.
// static int frame_matches(const AVFrame *f, int w, int h, int fmt) {
//   return f != NULL && f->width == w && f->height == h && f->format == fmt;
// }
//
// // rgb_to_frame converts w x h packed RGB24 (no row padding) into the
// // frame's planes through scratch, a copy of the picture with rows of
// // stride bytes, one more column and one more row (repeating the last)
// // and some slack:
// // - H.264 4:2:0 needs even sizes: a frame one larger than the picture
// //   takes the extra column or row from the copy, so chroma is computed
// //   over the padded picture as for any even size;
// // - swscale reads RGB in pairs of pixels for 4:2:0 chroma, so an odd
// //   width reads one pixel past each row, and its SIMD loops read up to
// //   a few dozen bytes past the last row: with the caller's buffer that
// //   would be the next row's first pixel (a wrong chroma edge) and memory
// //   past the end of a Go slice.
// static int rgb_to_frame(struct SwsContext **ctx, const uint8_t *rgb, int w, int h,
//                         uint8_t *scratch, int stride, AVFrame *f) {
//   if (f->width < w || f->width > w + 1 || f->height < h || f->height > h + 1) return -3;
//   for (int y = 0; y < h; y++) {
//     uint8_t *d = scratch + (size_t)y * stride;
//     memcpy(d, rgb + (size_t)y * w * 3, (size_t)w * 3);
//     memcpy(d + (size_t)w * 3, d + (size_t)(w - 1) * 3, 3);
//   }
//   memcpy(scratch + (size_t)h * stride, scratch + (size_t)(h - 1) * stride, (size_t)(w + 1) * 3);
//   // The encoder may still hold a reference to the previous picture's
//   // buffer; writing into it would change a frame it has not coded yet.
//   int ret = av_frame_make_writable(f);
//   if (ret < 0) return ret;
//   *ctx = sws_getCachedContext(*ctx, f->width, f->height, AV_PIX_FMT_RGB24,
//                               f->width, f->height, f->format, SWS_BILINEAR, NULL, NULL, NULL);
//   if (!*ctx) return -1;
//   const uint8_t *src[4] = {scratch, NULL, NULL, NULL};
//   int sl[4] = {stride, 0, 0, 0};
//   if (sws_scale(*ctx, src, sl, 0, f->height, f->data, f->linesize) != f->height) return -2;
//   return 0;
// }
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// avFrame returns the AVFrame behind an astiav.Frame.
//
// go-astiav v0.12.0 gives no way to write pixels into a frame: FrameData
// only copies out (its plane slices are C.GoBytes copies), and there is no
// av_image_copy_from_buffer or av_frame_make_writable wrapper. The only
// public route would be converting into a Go buffer and decoding that with
// a rawvideo decoder (Packet.FromData copies it once more): a second codec
// and two more copies of every picture. astiav.Frame is a struct whose only
// field is the *C.AVFrame, so its address is also the address of that
// pointer, and swscale can write straight into the frame's planes. The
// layout is pinned with the go-astiav version in go.mod, and checkFrame
// verifies it on every encoder start, so a changed layout is an error,
// never memory corruption.
func avFrame(f *astiav.Frame) *C.AVFrame {
	return *(**C.AVFrame)(unsafe.Pointer(f))
}

// checkFrame reports whether avFrame(f) is the AVFrame astiav describes.
func checkFrame(f *astiav.Frame) error {
	if C.frame_matches(avFrame(f), C.int(f.Width()), C.int(f.Height()), C.int(f.PixelFormat())) == 0 {
		return errors.New("go-astiav's Frame layout is not the one stream/yuv.go was written for (v0.12.0); update avFrame")
	}
	return nil
}

// yuvConverter owns one swscale context that turns packed RGB24 into the
// encoder's planar YUV, and the scratch copy it reads from.
type yuvConverter struct {
	ctx     *C.struct_SwsContext
	scratch []byte
}

// scratchSlack covers swscale's reads past the last row (its SSE/AVX
// loops read up to one vector past the last pixel).
const scratchSlack = 64

// convert writes the w x h RGB24 picture rgb (len w*h*3) into f, whose
// size is w x h or one larger in either direction (padding).
func (c *yuvConverter) convert(f *astiav.Frame, rgb []byte, w, h int) error {
	stride := ((w+1)*3 + 31) &^ 31
	if n := stride*(h+1) + scratchSlack; len(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	rc := C.rgb_to_frame(&c.ctx, (*C.uint8_t)(unsafe.Pointer(&rgb[0])), C.int(w), C.int(h),
		(*C.uint8_t)(unsafe.Pointer(&c.scratch[0])), C.int(stride), avFrame(f))
	switch {
	case rc == -1:
		return fmt.Errorf("swscale cannot convert rgb24 %dx%d to %s", f.Width(), f.Height(), f.PixelFormat().Name())
	case rc == -2:
		return fmt.Errorf("swscale rgb24 %dx%d to %s failed", f.Width(), f.Height(), f.PixelFormat().Name())
	case rc == -3:
		return fmt.Errorf("a %dx%d picture does not fit a %dx%d frame", w, h, f.Width(), f.Height())
	case rc < 0:
		return fmt.Errorf("make frame writable: %w", astiav.Error(int(rc)))
	}
	return nil
}

func (c *yuvConverter) close() {
	if c.ctx != nil {
		C.sws_freeContext(c.ctx)
		c.ctx = nil
	}
	c.scratch = nil
}
