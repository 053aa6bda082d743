package encode

import "fmt"

// Codec names a video codec htcstream can publish.
type Codec string

const (
	// H264 is sent as constrained baseline, the profile every browser decodes.
	H264 Codec = "h264"
	VP8  Codec = "vp8"
)

// Validate accepts the codecs htcstream encodes.
func (c Codec) Validate() error {
	if c != H264 && c != VP8 {
		return fmt.Errorf("codec %q: want %s or %s", c, H264, VP8)
	}
	return nil
}
