package decode

// #cgo pkg-config: libavformat
// #include <libavformat/avformat.h>
//
// static int duration_from_bitrate(const AVFormatContext *fc) {
//   return fc->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE;
// }
// static unsigned int nb_streams(const AVFormatContext *fc) { return fc->nb_streams; }
// static int frame_damaged(const AVFrame *f) {
//   return f->decode_error_flags != 0 || (f->flags & AV_FRAME_FLAG_CORRUPT) != 0;
// }
import "C"

import (
	"unsafe"

	"github.com/asticode/go-astiav"
)

// rawFormatContext is the AVFormatContext behind fc. go-astiav v0.12.0
// keeps it as the struct's only field and offers no accessor; the fields
// read through it here are ones astiav does not wrap. TestRawFormatContext
// checks the layout against the pinned version.
func rawFormatContext(fc *astiav.FormatContext) *C.AVFormatContext {
	if fc == nil {
		return nil
	}
	return *(**C.AVFormatContext)(unsafe.Pointer(fc))
}

// durationGuessed reports whether FFmpeg derived the input's duration from
// its bit rate — a guess, useless for telling a truncated file from a
// whole one — rather than reading it from the container.
func durationGuessed(fc *astiav.FormatContext) bool {
	c := rawFormatContext(fc)
	return c == nil || C.duration_from_bitrate(c) != 0
}

func rawNbStreams(fc *astiav.FormatContext) int {
	c := rawFormatContext(fc)
	if c == nil {
		return -1
	}
	return int(C.nb_streams(c))
}

// frameDamaged reports whether the decoder flagged f as damaged: it
// concealed errors in it (decode_error_flags) or marked it corrupt.
// go-astiav v0.12.0 wraps neither field; like rawFormatContext, this reads
// the AVFrame its struct holds as its only field.
func frameDamaged(f *astiav.Frame) bool {
	if f == nil {
		return false
	}
	c := *(**C.AVFrame)(unsafe.Pointer(f))
	return c != nil && C.frame_damaged(c) != 0
}
