package decode

// #cgo pkg-config: libavcodec libavutil
// #include <libavcodec/avcodec.h>
// #include <libavutil/hwcontext.h>
// #include <libavutil/frame.h>
//
// // attach_hw creates a device of the named type and hands the decoder a
// // reference; the caller keeps its own in *dev and unrefs it at close.
// static int attach_hw(AVCodecContext *cc, const char *name, AVBufferRef **dev) {
//   enum AVHWDeviceType t = av_hwdevice_find_type_by_name(name);
//   if (t == AV_HWDEVICE_TYPE_NONE) return AVERROR(ENOSYS);
//   int err = av_hwdevice_ctx_create(dev, t, NULL, NULL, 0);
//   if (err < 0) return err;
//   cc->hw_device_ctx = av_buffer_ref(*dev);
//   return cc->hw_device_ctx ? 0 : AVERROR(ENOMEM);
// }
// static void unref_hw(AVBufferRef **dev) { av_buffer_unref(dev); }
// static int is_hw_frame(const AVFrame *f) { return f->hw_frames_ctx != NULL; }
// // to_software downloads a hardware frame into sw (reset first) and
// // keeps its timestamps.
// static int to_software(AVFrame *sw, const AVFrame *hw) {
//   av_frame_unref(sw);
//   int err = av_hwframe_transfer_data(sw, hw, 0);
//   if (err < 0) return err;
//   return av_frame_copy_props(sw, hw);
// }
import "C"

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// HWDecoders are the hardware decoders Options.HWDecode may ask for.
var HWDecoders = []string{"cuda", "vaapi"}

// CheckHWDecode accepts "" (software) and the names in HWDecoders.
func CheckHWDecode(kind string) error {
	if kind != "" && !slices.Contains(HWDecoders, kind) {
		return fmt.Errorf("hardware decoder %q: want %s or empty (software)", kind, strings.Join(HWDecoders, ", "))
	}
	return nil
}

// rawCodecContext is the AVCodecContext behind cc; go-astiav v0.12.0 keeps
// it as the struct's only field (as for FormatContext, see native.go).
func rawCodecContext(cc *astiav.CodecContext) *C.AVCodecContext {
	return *(**C.AVCodecContext)(unsafe.Pointer(cc))
}

func rawFrame(f *astiav.Frame) *C.AVFrame {
	return *(**C.AVFrame)(unsafe.Pointer(f))
}

// hwDecode holds a hardware device the decoder uses.
type hwDecode struct {
	dev  *C.AVBufferRef
	sw   *astiav.Frame // frames downloaded from the device
	kind string
}

// attachHW asks for hardware decoding of kind before the decoder opens.
// When the device cannot be had (no GPU, no driver, FFmpeg built without
// it) the decoder stays in software and one log line says why: a missing
// accelerator slows a run down, it must not stop it.
func (d *Decoder) attachHW(kind string) {
	if kind == "" {
		return
	}
	var err error
	if !slices.Contains(HWDecoders, kind) {
		err = fmt.Errorf("unknown hardware decoder %q (want %v)", kind, HWDecoders)
	} else {
		ck := C.CString(kind)
		defer C.free(unsafe.Pointer(ck))
		var dev *C.AVBufferRef
		if rc := C.attach_hw(rawCodecContext(d.cc), ck, &dev); rc < 0 {
			err = astiav.Error(rc)
			C.unref_hw(&dev)
		} else {
			d.hw = &hwDecode{dev: dev, sw: astiav.AllocFrame(), kind: kind}
		}
	}
	if err != nil {
		slog.Warn("hardware decoding unavailable, decoding in software", "source", d.name, "asked", kind, "reason", err)
		return
	}
	slog.Info("hardware decoding", "source", d.name, "device", kind)
}

// software returns f itself, or — for a frame in device memory — its copy
// in system memory, which swscale can read.
func (d *Decoder) software(f *astiav.Frame) (*astiav.Frame, error) {
	if d.hw == nil || C.is_hw_frame(rawFrame(f)) == 0 {
		return f, nil
	}
	if rc := C.to_software(rawFrame(d.hw.sw), rawFrame(f)); rc < 0 {
		return nil, fmt.Errorf("download %s frame: %w", d.hw.kind, astiav.Error(rc))
	}
	return d.hw.sw, nil
}

// HWDevice reports the hardware decoder in use, "" for software.
func (d *Decoder) HWDevice() string {
	if d.hw == nil {
		return ""
	}
	return d.hw.kind
}

func (h *hwDecode) close() {
	if h == nil {
		return
	}
	h.sw.Free()
	C.unref_hw(&h.dev)
}
