package encode

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"
)

// EncoderConfig configures an Encoder. The zero value is what WebRTC wants:
// H.264 constrained baseline, x264 preset veryfast tuned for zero latency,
// constant quality, a keyframe at least every 2 s.
type EncoderConfig struct {
	// Codec is H264 (default) or VP8.
	Codec Codec
	// FrameRate is the nominal rate in frames per second that rate control
	// and the GOP length assume; every frame still keeps its own timestamp,
	// so a variable rate is fine. Default 30.
	FrameRate float64
	// GOP is the longest time between keyframes, counted in frames at
	// FrameRate; default 2 s.
	GOP time.Duration
	// Bitrate is the target in bits per second, also used as the cap of the
	// rate control buffer (one second of it) so a live stream stays within
	// its link; default 0 = constant quality (CRF) instead.
	Bitrate int64
	// CRF is the constant quality used when Bitrate is 0, lower is better:
	// H.264 1-51 (default 23), VP8 4-63 (default 10). VP8's quality mode
	// is capped at 0.1 bit a pixel a frame, since libvpx needs a cap.
	CRF int
	// Preset is the x264 speed preset (ultrafast ... placebo); default
	// "veryfast". VP8 ignores it: libvpx runs with deadline realtime and
	// cpu-used 8.
	Preset string
	// Threads bounds the encoder's threads; default 0 = the codec picks for
	// the machine's cores. (FFmpeg's own default, 1, would leave x264
	// single-threaded.)
	Threads int

	// forFile switches H.264 to what a file wants (FileSink): high profile,
	// no latency tuning (lookahead, better compression), headers in the
	// codec's extradata for mp4's avcC. B-frames stay off so DTS equals PTS
	// and a variable frame rate keeps exact timing.
	forFile bool
}

// x264Presets are the presets x264 knows, checked before the first frame
// so a typo fails at start, not when the first picture arrives.
var x264Presets = []string{"ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"}

// WithDefaults fills the zero fields and checks the rest.
func (c EncoderConfig) WithDefaults() (EncoderConfig, error) {
	if c.Codec == "" {
		c.Codec = H264
	}
	if c.Codec != H264 && c.Codec != VP8 {
		return c, fmt.Errorf("unknown codec %q (want h264 or vp8)", c.Codec)
	}
	if c.FrameRate == 0 {
		c.FrameRate = 30
	}
	if !(c.FrameRate > 0 && c.FrameRate <= 1000) {
		return c, fmt.Errorf("frame rate %v out of range (0, 1000]", c.FrameRate)
	}
	if c.GOP == 0 {
		c.GOP = 2 * time.Second
	}
	if c.GOP < 0 {
		return c, fmt.Errorf("negative GOP %v", c.GOP)
	}
	if c.Bitrate < 0 {
		return c, fmt.Errorf("negative bitrate %d", c.Bitrate)
	}
	def, lo, hi := 23, 1, 51
	if c.Codec == VP8 {
		def, lo, hi = 10, 4, 63
	}
	if c.CRF == 0 {
		c.CRF = def
	}
	if c.CRF < lo || c.CRF > hi {
		return c, fmt.Errorf("%s CRF %d out of range %d-%d", c.Codec, c.CRF, lo, hi)
	}
	if c.Preset == "" {
		c.Preset = "veryfast"
	}
	if !slices.Contains(x264Presets, c.Preset) {
		return c, fmt.Errorf("unknown x264 preset %q (want one of %s)", c.Preset, strings.Join(x264Presets, ", "))
	}
	if c.Threads < 0 {
		return c, fmt.Errorf("negative thread count %d", c.Threads)
	}
	return c, nil
}

// Packet is one encoded frame.
type Packet struct {
	// Data is an H.264 access unit in Annex B form (start codes; SPS and
	// PPS precede every IDR) or one VP8 frame: what pion's
	// TrackLocalStaticSample takes as a sample. The Encoder does not keep it.
	Data []byte
	// PTS and DTS are the frame's presentation and decoding times, on the
	// clock of the pts given to Encode. They are equal (no B-frames).
	PTS, DTS time.Duration
	// Keyframe marks a picture that decodes on its own (an H.264 IDR).
	Keyframe bool
}

// TickRate is the encoder's clock: RTP's video clock, fine enough to keep
// any frame's time within 6 µs, so variable frame rates keep their timing
// (and the mp4 track's timescale).
const TickRate = 90000

var timeBase = astiav.NewRational(1, TickRate)

// MaxPTS is the largest frame time an encoder takes: it keeps d*9 (ticks
// are 9/100000 of a nanosecond) within int64.
const MaxPTS = time.Duration(math.MaxInt64 / 9)

// ToTicks rounds to the nearest tick, so ticks -> Duration -> ticks is the
// identity.
func ToTicks(d time.Duration) int64 {
	n := int64(d) * 9
	if n < 0 {
		return (n - 50000) / 100000
	}
	return (n + 50000) / 100000
}

func FromTicks(t int64) time.Duration {
	q, r := t/TickRate, t%TickRate
	return time.Duration(q)*time.Second + time.Duration(r)*time.Second/TickRate
}

// maxSide bounds a frame's sides: VP8's limit (14 bits) and beyond what
// H.264 levels allow, and small enough that w*h*3 cannot overflow.
const maxSide = 16384

// Encoder turns packed RGB24 frames into H.264 or VP8 packets with FFmpeg
// (libx264, libvpx). The codec opens on the first frame, whose size every
// later frame must have. Encode, Flush and Close are called from one
// goroutine; ForceKeyframe from any.
//
// H.264 needs even sizes for 4:2:0: an odd width or height is padded by one
// column or row that repeats the last one, so a 33x17 input is coded (and
// decodes) as 34x18. VP8 codes any size as it is.
type Encoder struct {
	cfg   EncoderConfig
	codec *astiav.Codec

	cc    *astiav.CodecContext
	frame *astiav.Frame
	pkt   *astiav.Packet
	yuv   yuvConverter

	w, h      int // input size; 0 until the first frame
	lastTicks int64
	nudged    int64
	flushed   bool
	closed    bool
	forceKey  atomic.Bool
}

// NewEncoder checks cfg and finds its codec; the codec itself opens on the
// first frame, when the size is known.
func NewEncoder(cfg EncoderConfig) (*Encoder, error) {
	cfg, err := cfg.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("encoder: %w", err)
	}
	name := map[Codec]string{H264: "libx264", VP8: "libvpx"}[cfg.Codec]
	codec := astiav.FindEncoderByName(name)
	if codec == nil {
		return nil, fmt.Errorf("encoder: the FFmpeg libraries loaded have no %s encoder (Debian's libavcodec59 has it; run scripts/setup)", name)
	}
	return &Encoder{cfg: cfg, codec: codec}, nil
}

// ForceKeyframe makes the next frame given to Encode a keyframe (an IDR
// for H.264), e.g. when a WebRTC receiver sends a PLI or FIR. It is safe
// to call from any goroutine.
func (e *Encoder) ForceKeyframe() { e.forceKey.Store(true) }

// Size reports the coded size (after padding), 0, 0 before the first frame.
func (e *Encoder) Size() (w, h int) {
	if e.cc == nil {
		return 0, 0
	}
	return e.cc.Width(), e.cc.Height()
}

// InputSize reports the frame size the encoder was opened for (before
// padding), 0, 0 before the first frame: a frame of another size needs a
// new encoder.
func (e *Encoder) InputSize() (w, h int) { return e.w, e.h }

// Nudged counts the frames whose timestamp was not after the previous
// frame's and was moved one tick (1/90000 s) past it: encoders need
// strictly increasing timestamps, and dropping such a frame would lose it.
func (e *Encoder) Nudged() int64 { return e.nudged }

// Encode encodes one w x h picture of packed RGB24 (len(rgb) = w*h*3, rows
// without padding) presented at pts, and returns the packets the encoder
// finished, maybe none (a file encoder looks a few frames ahead) or several.
// rgb is not retained.
func (e *Encoder) Encode(w, h int, rgb []byte, pts time.Duration) ([]Packet, error) {
	var out []Packet
	err := e.encode(w, h, rgb, pts, func(p *astiav.Packet) error {
		out = append(out, e.export(p))
		return nil
	})
	return out, err
}

// Flush ends the stream and returns the packets still inside the encoder.
// Encode fails after it; Flush again returns nothing.
func (e *Encoder) Flush() ([]Packet, error) {
	var out []Packet
	err := e.flush(func(p *astiav.Packet) error {
		out = append(out, e.export(p))
		return nil
	})
	return out, err
}

func (e *Encoder) export(p *astiav.Packet) Packet {
	return Packet{
		Data:     p.Data(),
		PTS:      FromTicks(p.Pts()),
		DTS:      FromTicks(p.Dts()),
		Keyframe: p.Flags().Has(astiav.PacketFlagKey),
	}
}

// encode is Encode with packets handed to emit, which must not keep them.
func (e *Encoder) encode(w, h int, rgb []byte, pts time.Duration, emit func(*astiav.Packet) error) error {
	if _, err := e.prepare(w, h, rgb, pts); err != nil {
		return err
	}
	return e.send(e.frame, emit)
}

// CheckRGB checks an RGB24 frame and its time before it is published or
// encoded.
func CheckRGB(w, h int, rgb []byte, pts time.Duration) error {
	switch {
	case w <= 0 || h <= 0 || w > maxSide || h > maxSide:
		return fmt.Errorf("frame size %dx%d out of range 1-%d", w, h, maxSide)
	case len(rgb) != w*h*3:
		return fmt.Errorf("%dx%d rgb24 frame has %d bytes, want %d", w, h, len(rgb), w*h*3)
	case pts > MaxPTS || pts < -MaxPTS:
		return fmt.Errorf("pts %v out of range", pts)
	}
	return nil
}

// prepare checks a frame, opens the codec on the first one, and fills the
// encoder's AVFrame with it; it returns the frame's time in ticks, after
// any nudge.
func (e *Encoder) prepare(w, h int, rgb []byte, pts time.Duration) (int64, error) {
	switch {
	case e.closed:
		return 0, fmt.Errorf("encode: %w", ErrClosed)
	case e.flushed:
		return 0, errors.New("encode: the encoder was flushed; start a new one for a new stream")
	}
	if err := CheckRGB(w, h, rgb, pts); err != nil {
		return 0, fmt.Errorf("encode: %w", err)
	}
	ticks := ToTicks(pts)
	if e.cc == nil {
		if err := e.open(w, h); err != nil {
			e.free()
			return 0, fmt.Errorf("open %s encoder for %dx%d: %w", e.codec.Name(), w, h, err)
		}
	} else {
		if w != e.w || h != e.h {
			return 0, fmt.Errorf("encode: frame is %dx%d but the stream is %dx%d; a size change needs a new encoder", w, h, e.w, e.h)
		}
		if ticks <= e.lastTicks {
			ticks = e.lastTicks + 1
			e.nudged++
		}
	}
	e.lastTicks = ticks
	if err := e.yuv.convert(e.frame, rgb, w, h); err != nil {
		return 0, fmt.Errorf("encode: %w", err)
	}
	e.frame.SetPts(ticks)
	if e.forceKey.Swap(false) {
		// libx264 turns an I picture type into an IDR (forced-idr is set),
		// libvpx into VPX_EFLAG_FORCE_KF.
		e.frame.SetPictureType(astiav.PictureTypeI)
		e.frame.SetKeyFrame(true)
	} else {
		e.frame.SetPictureType(astiav.PictureTypeNone)
		e.frame.SetKeyFrame(false)
	}
	return ticks, nil
}

func (e *Encoder) flush(emit func(*astiav.Packet) error) error {
	if e.closed {
		return fmt.Errorf("flush: %w", ErrClosed)
	}
	if e.flushed || e.cc == nil {
		e.flushed = true
		return nil
	}
	e.flushed = true
	return e.send(nil, emit)
}

// send gives f (nil: end of stream) to the codec and hands every packet it
// finishes to emit.
func (e *Encoder) send(f *astiav.Frame, emit func(*astiav.Packet) error) error {
	if err := e.cc.SendFrame(f); err != nil {
		if f == nil && errors.Is(err, astiav.ErrEof) {
			return nil
		}
		return fmt.Errorf("%s: send frame: %w", e.codec.Name(), err)
	}
	for {
		err := e.cc.ReceivePacket(e.pkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: receive packet: %w", e.codec.Name(), err)
		}
		err = emit(e.pkt)
		e.pkt.Unref()
		if err != nil {
			return err
		}
	}
}

func (e *Encoder) open(w, h int) error {
	cfg := e.cfg
	cw, ch := w, h
	if cfg.Codec == H264 {
		cw, ch = w+w%2, h+h%2
	}
	if e.cc = astiav.AllocCodecContext(e.codec); e.cc == nil {
		return errors.New("cannot allocate a codec context")
	}
	e.cc.SetWidth(cw)
	e.cc.SetHeight(ch)
	e.cc.SetPixelFormat(astiav.PixelFormatYuv420P)
	e.cc.SetTimeBase(timeBase)
	// 1001 as denominator keeps both integer and NTSC rates exact.
	e.cc.SetFramerate(astiav.NewRational(int(math.Round(cfg.FrameRate*1001)), 1001))
	e.cc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	e.cc.SetGopSize(max(1, int(math.Round(cfg.GOP.Seconds()*cfg.FrameRate))))
	e.cc.SetThreadCount(cfg.Threads)
	if cfg.forFile {
		e.cc.SetFlags(e.cc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	}

	opts := map[string]string{
		// swscale's RGB -> YUV matrix is BT.601 with limited range; say so in
		// the bitstream so players do not guess BT.709 for HD sizes.
		"colorspace":  "smpte170m",
		"color_range": "tv",
	}
	switch cfg.Codec {
	case H264:
		opts["preset"] = cfg.Preset
		opts["forced-idr"] = "1"
		if cfg.forFile {
			opts["profile"] = "high"
			opts["bf"] = "0"
		} else {
			// x264's baseline is constrained baseline (constraint_set1), the
			// profile every WebRTC endpoint must decode.
			opts["profile"] = "baseline"
			opts["tune"] = "zerolatency"
		}
		if cfg.Bitrate > 0 {
			e.cc.SetBitRate(cfg.Bitrate)
			opts["maxrate"] = strconv.FormatInt(cfg.Bitrate, 10)
			opts["bufsize"] = strconv.FormatInt(cfg.Bitrate, 10)
		} else {
			opts["crf"] = strconv.Itoa(cfg.CRF)
		}
	case VP8:
		opts["deadline"] = "realtime"
		opts["cpu-used"] = "8"
		opts["lag-in-frames"] = "0"
		if cfg.Bitrate > 0 {
			// Equal min, max and target rates select libvpx's CBR mode,
			// which is what a live link wants.
			b := strconv.FormatInt(cfg.Bitrate, 10)
			e.cc.SetBitRate(cfg.Bitrate)
			opts["minrate"], opts["maxrate"], opts["bufsize"] = b, b, b
		} else {
			opts["crf"] = strconv.Itoa(cfg.CRF)
			e.cc.SetBitRate(int64(float64(cw*ch) * cfg.FrameRate * 0.1))
		}
	}
	dict := astiav.NewDictionary()
	defer dict.Free()
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := dict.Set(k, opts[k], 0); err != nil {
			return fmt.Errorf("option %s=%s: %w", k, opts[k], err)
		}
	}
	if err := e.cc.Open(e.codec, dict); err != nil {
		return fmt.Errorf("open codec with %v: %w", opts, err)
	}
	// FFmpeg leaves the options nobody took in dict; one left means a
	// library without a setting this encoder relies on (e.g. forced-idr).
	if left := dict.Get("", nil, astiav.NewDictionaryFlags(astiav.DictionaryFlagIgnoreSuffix)); left != nil {
		return fmt.Errorf("%s does not know option %s=%s", e.codec.Name(), left.Key(), left.Value())
	}

	if e.frame = astiav.AllocFrame(); e.frame == nil {
		return errors.New("cannot allocate a frame")
	}
	e.frame.SetWidth(cw)
	e.frame.SetHeight(ch)
	e.frame.SetPixelFormat(astiav.PixelFormatYuv420P)
	e.frame.SetSampleAspectRatio(astiav.NewRational(1, 1))
	if err := e.frame.AllocBuffer(0); err != nil {
		return fmt.Errorf("allocate a %dx%d yuv420p frame: %w", cw, ch, err)
	}
	if err := checkFrame(e.frame); err != nil {
		return err
	}
	if e.pkt = astiav.AllocPacket(); e.pkt == nil {
		return errors.New("cannot allocate a packet")
	}
	e.w, e.h = w, h
	return nil
}

// Close releases the codec, frame and packet; packets not yet flushed are
// dropped. It is idempotent.
func (e *Encoder) Close() {
	e.closed = true
	e.free()
}

func (e *Encoder) free() {
	e.yuv.close()
	if e.frame != nil {
		e.frame.Free()
		e.frame = nil
	}
	if e.pkt != nil {
		e.pkt.Free()
		e.pkt = nil
	}
	if e.cc != nil {
		e.cc.Free()
		e.cc = nil
	}
}

// ErrClosed is returned (wrapped) by every use of an encoder or file sink
// after its Close.
var ErrClosed = errors.New("stream: closed")
