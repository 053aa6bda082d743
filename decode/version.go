package decode

// #cgo pkg-config: libavcodec libavformat libavutil
// #include <libavcodec/avcodec.h>
// #include <libavformat/avformat.h>
// #include <libavutil/avutil.h>
import "C"

import "fmt"

// FFmpegVersion reports the FFmpeg release and the libavcodec/libavformat
// versions that the process actually loaded (not the headers it was built
// against), so a mismatched system library shows.
func FFmpegVersion() string {
	return fmt.Sprintf("%s (libavcodec %s, libavformat %s)",
		C.GoString(C.av_version_info()), libVersion(uint(C.avcodec_version())), libVersion(uint(C.avformat_version())))
}

func libVersion(v uint) string {
	return fmt.Sprintf("%d.%d.%d", v>>16, (v>>8)&0xff, v&0xff)
}
