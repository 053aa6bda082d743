package encode

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/asticode/go-astiav"
)

// ErrNoFrames is returned (wrapped) by FileSink.Close when no frame was
// written: an mp4 without a video track is no use, so none is left.
var ErrNoFrames = errors.New("no frames written")

// FileSink records RGB frames as H.264 in an mp4 file.
//
// The file is written as PATH.partial and renamed to PATH by Close, after
// the encoder is flushed and the trailer (the moov index) is written. An
// mp4 is only playable once its trailer is there, so PATH only ever holds
// a complete file; a process killed without Close leaves PATH.partial,
// whose name says what it is, rather than a broken PATH. The rename is
// atomic because both names are in one directory.
//
// Shutdown contract: the pipeline calls Close when the run ends, including
// on SIGINT/SIGTERM (from the goroutine that receives the signal). Close
// and WriteFrame may be called from different goroutines: Close waits for
// a WriteFrame in progress, and WriteFrame after Close returns ErrClosed.
// Close takes as long as encoding the frames x264 still holds (its
// lookahead, about ten frames).
type FileSink struct {
	mu     sync.Mutex
	path   string
	tmp    string
	enc    *Encoder
	fc     *astiav.FormatContext
	pb     *astiav.IOContext
	st     *astiav.Stream
	header bool
	closed bool
	frames int64

	// pending holds the frames whose packets are not written yet, oldest
	// first: a packet's duration is the time to the next frame, which mp4
	// stores for the last sample.
	pending   []pendingFrame
	prevTicks int64 // the previous frame's time
	lastDur   int64 // the latest interval between frames
	// nomDur is the duration a lone frame gets: one nominal frame.
	nomDur   int64
	writeErr error
	// fragmented writes PATH itself as fragmented MP4 (NewSegmentFile)
	fragmented bool
	// onWritten hears of each frame whose packet is in the file
	onWritten func(pts time.Duration)
}

// pendingFrame is a frame in the encoder: its time in the track's ticks,
// and the pts WriteFrame was given, which OnWritten reports as it was: a
// caller that keys frames by a pts it offset (a recording segment's start)
// must get back exactly what it gave, and ticks -> pts does not round back
// to it for every clock (microsecond camera timestamps).
type pendingFrame struct {
	ticks int64
	pts   time.Duration
}

// OnWritten sets a function called with a frame's pts (as given to
// WriteFrame, or as moved past the previous one) once its encoded packet
// has gone to the muxer: x264's lookahead holds a file's frames some
// frames longer than WriteFrame. It is called from WriteFrame and Close,
// under the sink's lock; set it before the first WriteFrame.
func (s *FileSink) OnWritten(f func(pts time.Duration)) { s.onWritten = f }

// NewFileSink creates PATH.partial and prepares the mp4 muxer; the video
// track is set up by the first frame and keeps its size: a later frame of
// another size is scaled to fit it, centred between black bars. The file is
// H.264 whatever cfg.Codec says (mp4 is for players, which all take H.264),
// high profile; the zero cfg encodes at constant quality 23 with x264's
// veryfast preset.
func NewFileSink(path string, cfg EncoderConfig) (*FileSink, error) {
	cfg.Codec, cfg.forFile = H264, true
	enc, err := NewEncoder(cfg)
	if err != nil {
		return nil, fmt.Errorf("mp4 sink %s: %w", path, err)
	}
	s := &FileSink{path: path, tmp: path + ".partial", enc: enc}
	s.nomDur = max(1, int64(math.Round(TickRate/enc.cfg.FrameRate)))
	if err := s.open(); err != nil {
		s.release()
		os.Remove(s.tmp)
		return nil, fmt.Errorf("mp4 sink %s: %w", path, err)
	}
	return s, nil
}

// NewSegmentFile is a FileSink for a file that is read while it is written
// (an annotated recording segment): fragmented MP4 written to path itself,
// an empty moov first and a fragment per keyframe flushed as it completes,
// so a reader plays what is there and a kill loses only the fragment in
// progress. Close writes the last fragment; there is no rename.
func NewSegmentFile(path string, cfg EncoderConfig) (*FileSink, error) {
	cfg.Codec, cfg.forFile = H264, true
	enc, err := NewEncoder(cfg)
	if err != nil {
		return nil, fmt.Errorf("mp4 segment %s: %w", path, err)
	}
	s := &FileSink{path: path, tmp: path, enc: enc, fragmented: true}
	s.nomDur = max(1, int64(math.Round(TickRate/enc.cfg.FrameRate)))
	if err := s.open(); err != nil {
		s.release()
		os.Remove(path)
		return nil, fmt.Errorf("mp4 segment %s: %w", path, err)
	}
	return s, nil
}

func (s *FileSink) open() error {
	if err := CheckDir(s.path); err != nil {
		return err
	}
	fc, err := astiav.AllocOutputFormatContext(nil, "mp4", s.tmp)
	if err != nil {
		return fmt.Errorf("allocate the mp4 muxer: %w", err)
	}
	s.fc = fc
	pb := astiav.NewIOContext()
	// "file:" keeps a name with a colon from being read as a protocol.
	if err := pb.Open("file:"+s.tmp, astiav.NewIOContextFlags(astiav.IOContextFlagWrite)); err != nil {
		return fmt.Errorf("create %s: %w", s.tmp, err)
	}
	s.pb = pb
	s.fc.SetPb(pb)
	return nil
}

// CheckDir fails with a message naming the directory when a file's
// directory is missing, which FFmpeg and os would only report as "No such
// file or directory".
func CheckDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("directory %s does not exist; create it first", dir)
	}
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return nil
}

// Path is the final file name.
func (s *FileSink) Path() string { return s.path }

// WriteFrame encodes one w x h packed RGB24 frame (len(rgb) = w*h*3)
// presented at pts and writes the packets the encoder finishes. Frames
// must come in presentation order; a pts not after the previous one is
// moved one tick (1/90000 s) past it. rgb is not retained.
func (s *FileSink) WriteFrame(w, h int, rgb []byte, pts time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("mp4 sink %s: %w", s.path, ErrClosed)
	}
	if s.writeErr != nil {
		return fmt.Errorf("mp4 sink %s: an earlier write failed: %w", s.path, s.writeErr)
	}
	if fw, fh := s.enc.w, s.enc.h; fw > 0 && (w != fw || h != fh) {
		if err := CheckRGB(w, h, rgb, pts); err != nil {
			return fmt.Errorf("mp4 sink %s: %w", s.path, err)
		}
		rgb, w, h = fitRGB(rgb, w, h, fw, fh), fw, fh
	}
	ticks, err := s.enc.prepare(w, h, rgb, pts)
	if err != nil {
		return fmt.Errorf("mp4 sink %s: %w", s.path, err)
	}
	if s.frames > 0 {
		s.lastDur = ticks - s.prevTicks
	}
	s.prevTicks = ticks
	given := pts
	if ToTicks(pts) != ticks { // moved past the previous frame
		given = FromTicks(ticks)
	}
	s.pending = append(s.pending, pendingFrame{ticks, given})
	s.frames++
	if err := s.enc.send(s.enc.frame, s.writePacket); err != nil {
		return fmt.Errorf("mp4 sink %s: %w", s.path, err)
	}
	return nil
}

// writePacket muxes one packet of the encoder; the muxer takes its data.
func (s *FileSink) writePacket(p *astiav.Packet) error {
	if !s.header {
		if err := s.writeHeader(); err != nil {
			s.writeErr = err
			return err
		}
	}
	pts := p.Pts()
	given := FromTicks(pts)
	for len(s.pending) > 0 && s.pending[0].ticks <= pts {
		if s.pending[0].ticks == pts {
			given = s.pending[0].pts
		}
		s.pending = s.pending[1:]
	}
	dur := s.lastDur
	if len(s.pending) > 0 {
		dur = s.pending[0].ticks - pts
	}
	if dur <= 0 {
		dur = s.nomDur
	}
	p.SetDuration(dur)
	p.SetStreamIndex(s.st.Index())
	p.RescaleTs(s.enc.cc.TimeBase(), s.st.TimeBase())
	if err := s.fc.WriteInterleavedFrame(p); err != nil {
		s.writeErr = fmt.Errorf("write packet at %v: %w", FromTicks(pts), err)
		return s.writeErr
	}
	if s.onWritten != nil {
		s.onWritten(given)
	}
	return nil
}

func (s *FileSink) writeHeader() error {
	if s.st = s.fc.NewStream(nil); s.st == nil {
		return errors.New("cannot add a video track")
	}
	if err := s.st.CodecParameters().FromCodecContext(s.enc.cc); err != nil {
		return fmt.Errorf("video track parameters: %w", err)
	}
	s.st.SetTimeBase(s.enc.cc.TimeBase())
	var opts *astiav.Dictionary
	if s.fragmented {
		opts = astiav.NewDictionary()
		defer opts.Free()
		opts.Set("movflags", "frag_keyframe+empty_moov+default_base_moof", 0)
		opts.Set("flush_packets", "1", 0)
	}
	if err := s.fc.WriteHeader(opts); err != nil {
		return fmt.Errorf("write mp4 header: %w", err)
	}
	s.header = true
	return nil
}

// Close flushes the encoder, writes the mp4 trailer, closes the file and
// renames it to its final name. It is idempotent (later calls return nil)
// and safe to call from another goroutine than WriteFrame's, such as the
// one handling SIGINT. When a step fails the partial file stays for
// inspection and the error names it.
func (s *FileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.frames > 0 && s.writeErr == nil {
		if err := s.enc.flush(s.writePacket); err != nil {
			errs = append(errs, fmt.Errorf("flush encoder: %w", err))
		}
	}
	if s.header {
		if err := s.fc.WriteTrailer(); err != nil {
			errs = append(errs, fmt.Errorf("write mp4 trailer: %w", err))
		}
	}
	if err := s.release(); err != nil {
		errs = append(errs, err)
	}
	switch {
	case len(errs) > 0:
		errs = append(errs, fmt.Errorf("the incomplete recording stays in %s", s.tmp))
	case !s.header:
		os.Remove(s.tmp)
		errs = append(errs, ErrNoFrames)
	case s.fragmented:
		// written in place all along
	default:
		if err := os.Rename(s.tmp, s.path); err != nil {
			errs = append(errs, fmt.Errorf("rename the finished recording: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mp4 sink %s: %w", s.path, err)
	}
	return nil
}

// release closes the file and frees the muxer and encoder.
func (s *FileSink) release() error {
	var err error
	if s.pb != nil {
		if e := s.pb.Closep(); e != nil {
			err = fmt.Errorf("close %s: %w", s.tmp, e)
		}
		s.pb = nil
	}
	if s.fc != nil {
		// The IO context is closed above: avformat_free_context leaves it.
		s.fc.Free()
		s.fc = nil
	}
	s.enc.Close()
	return err
}
