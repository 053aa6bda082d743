package record

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"
)

// mp4Copy is an MP4 file that one video stream's packets are copied into,
// never re-encoded: a recording segment or a clip.
type mp4Copy struct {
	fc *astiav.FormatContext
	pb *astiav.IOContext
	st *astiav.Stream
}

// createMP4Copy starts the MP4 named path, written at file, for the stream
// par describes, and writes its header. A tb with Num > 0 asks for that
// time base (the muxer may round it; st.TimeBase says what it took).
// fragmented writes an empty moov up front, then a fragment per keyframe
// flushed as soon as it is complete: a reader plays the file while it grows
// and a kill loses the last fragment only.
func createMP4Copy(path, file string, par *astiav.CodecParameters, tb astiav.Rational, fragmented bool) (*mp4Copy, error) {
	fc, err := astiav.AllocOutputFormatContext(nil, "mp4", path)
	if err != nil || fc == nil {
		return nil, fmt.Errorf("mp4 muxer for %s: %v", path, err)
	}
	m := &mp4Copy{fc: fc}
	fail := func(err error) (*mp4Copy, error) {
		m.close()
		return nil, err
	}
	if m.st = fc.NewStream(nil); m.st == nil {
		return fail(errors.New("cannot add a stream"))
	}
	if err := par.Copy(m.st.CodecParameters()); err != nil {
		return fail(fmt.Errorf("codec parameters: %w", err))
	}
	m.st.CodecParameters().SetCodecTag(0)
	if tb.Num() > 0 {
		m.st.SetTimeBase(tb)
	}
	m.pb = astiav.NewIOContext()
	if err := m.pb.Open("file:"+file, astiav.NewIOContextFlags(astiav.IOContextFlagWrite)); err != nil {
		m.pb = nil
		return fail(fmt.Errorf("create %s: %w", file, err))
	}
	fc.SetPb(m.pb)
	var opts *astiav.Dictionary
	if fragmented {
		opts = astiav.NewDictionary()
		defer opts.Free()
		opts.Set("movflags", "frag_keyframe+empty_moov+default_base_moof", 0)
		opts.Set("flush_packets", "1", 0)
	}
	if err := fc.WriteHeader(opts); err != nil {
		return fail(fmt.Errorf("write %s: %w", path, err))
	}
	return m, nil
}

// close closes the file and frees the muxer; it is idempotent.
func (m *mp4Copy) close() {
	if m.pb != nil {
		m.pb.Closep()
		m.pb = nil
	}
	if m.fc != nil {
		m.fc.Free()
		m.fc = nil
	}
}
