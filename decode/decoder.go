package decode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/asticode/go-astiav"
	"github.com/htcstream/htcstream/internal/redact"
)

// ErrInterrupted is wrapped by the error of an Open or Next that
// Interrupt (or the end of Open's context) cut short.
var ErrInterrupted = errors.New("interrupted")

// ErrTruncated is wrapped by the error of a Next that reached the end of a
// file before the end its container declares (a file cut short by a full
// disk, a killed writer, a partial download). Elementary streams (raw
// .h264/.h265) declare no length, so their truncation cannot be told.
var ErrTruncated = errors.New("file ends before its declared length (truncated)")

// Frame is one decoded picture as packed RGB24 (3 bytes a pixel, rows of
// Width*3 bytes, no padding). Its memory is Go's: pass it on freely.
type Frame struct {
	StreamID string
	// Seq counts frames from 0. A Decoder counts its own frames; an
	// ingest.Runner renumbers them as the stream's, across reconnects and
	// loop passes.
	Seq int64
	// PTS is the presentation time relative to the stream's start; frames
	// without a timestamp get one derived from the frame rate. A Decoder
	// gives the media's own times; an ingest.Runner continues them as the
	// stream's clock, which only grows.
	PTS time.Duration
	// Captured is the wall-clock time the demuxer handed over the packet
	// that holds the picture (FFmpeg's av_read_frame returned it), before
	// decoding and conversion to RGB: the reference for latency
	// measurements downstream (what htcstream adds to the camera's own
	// delay and the network's), and the frame's time of day in outputs.
	Captured time.Time
	// Name is the file the picture came from, without its folder, for
	// pictures of an image folder (ingest sets it); empty for video.
	Name          string
	Width, Height int
	RGB           []byte
}

// Options configures a Decoder. The zero value decodes the first video stream
// of a local file with FFmpeg's defaults.
type Options struct {
	// StreamID names the stream in every Frame; default: the URL with any
	// password hidden.
	StreamID string
	// Format forces an input format (e.g. "v4l2"); default: probed.
	Format string
	// Input holds demuxer/protocol options (e.g. "rtsp_transport": "tcp").
	Input map[string]string
	// HWDecode asks for hardware decoding: "cuda" or "vaapi"; default
	// software. Unavailable hardware falls back to software with a log line.
	HWDecode string
	// Live says the input is a live stream (a camera, RTSP): its end is a
	// drop, never a truncated file, whatever length it announced.
	Live bool
	// Tap, when set, sees every packet of the video stream before it is
	// decoded (recording without re-encoding).
	Tap PacketTap
}

// Decoder demuxes and decodes the best video stream of one input. It is used
// by one goroutine at a time, except Interrupt, which any goroutine may call.
type Decoder struct {
	url  string
	name string // url with any password hidden: for messages
	id   string
	fc   *astiav.FormatContext
	// abort is FFmpeg's interrupt flag: the C side polls it during blocking
	// I/O. Its memory is Go's and lives as long as the Decoder, so an
	// Interrupt racing with (or after) Close still writes valid memory.
	abort       *int
	pin         runtime.Pinner // lets C keep abort's address, as cgo's rules ask
	interrupted atomic.Bool
	packets     atomic.Int64
	damagedN    atomic.Int64 // packets rejected as invalid + frames decoded with errors
	opened      bool
	cc          *astiav.CodecContext
	pkt         *astiav.Packet
	frame       *astiav.Frame
	stream      *astiav.Stream
	rgb         rgbConverter
	hw          *hwDecode // nil: software decoding
	tap         PacketTap // began: Begin was called, End is owed
	tapBegan    bool
	seq         int64
	draining    bool
	done        bool
	frameDur    time.Duration
	lastPTS     time.Duration
	damaged     error
	// declared is the stream's length as its container states it (0 when
	// unknown); reached is how far the packets read so far went.
	declared time.Duration
	live     bool // Options.Live
	reached  time.Duration
	// arrivals are when the last packets sent to the decoder were read,
	// by their pts, so a picture the decoder returns later (threads,
	// reordering) still gets its own packet's time.
	arrivals   [arrivalRing]arrival
	nArrivals  int
	lastArrive time.Time
}

// arrivalRing is more packets than any decoder holds back.
const arrivalRing = 64

type arrival struct {
	pts int64
	at  time.Time
}

// Open opens url and prepares the decoder of its best video stream.
func Open(url string, o Options) (*Decoder, error) {
	return OpenContext(context.Background(), url, o)
}

// OpenContext is Open that gives up when ctx ends: a network source that
// accepts a connection but never answers would otherwise hold Open until
// FFmpeg's own timeouts (if any) run out. ctx governs the opening only; to
// cut a later Next short, call Interrupt. The error of an open cut short
// wraps both ErrInterrupted and ctx's error, and ErrTimeout too when that
// was a deadline. A server that refuses the credentials gives an error
// wrapping ErrUnauthorized; one that says nothing until FFmpeg's socket
// timeout, ErrTimeout.
func OpenContext(ctx context.Context, url string, o Options) (*Decoder, error) {
	d := &Decoder{url: url, name: redact.URL(url), id: o.StreamID, live: o.Live}
	if d.id == "" {
		d.id = d.name
	}
	if err := d.open(ctx, o); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Interrupt makes the decoder's blocking FFmpeg calls (open, read) return as
// soon as FFmpeg next polls its interrupt callback (at most about 100 ms in
// FFmpeg's network code); Next then drains what the decoder holds and
// returns an error wrapping ErrInterrupted. It cannot be undone. Any
// goroutine may call it at any time, also during or after Close.
func (d *Decoder) Interrupt() {
	d.interrupted.Store(true)
	if d.abort == nil {
		return
	}
	// The flag is a Go int read by C as an int; a word-sized atomic store
	// keeps the write whole and visible to the reading thread.
	if unsafe.Sizeof(*d.abort) == 8 {
		atomic.StoreInt64((*int64)(unsafe.Pointer(d.abort)), 1)
	} else {
		atomic.StoreInt32((*int32)(unsafe.Pointer(d.abort)), 1)
	}
}

// Packets counts the packets read from the input so far, of every stream:
// a watchdog's sign that data still arrives while no picture is complete
// yet (a camera's long wait for its next keyframe). Any goroutine may call
// it.
func (d *Decoder) Packets() int64 { return d.packets.Load() }

// DecodeErrors counts the damage the decoder met so far: packets it
// rejected as invalid data (each costs a picture) and pictures it decoded
// with errors concealed or flagged corrupt. A whole input gives 0. Any
// goroutine may call it.
func (d *Decoder) DecodeErrors() int64 { return d.damagedN.Load() }

func (d *Decoder) open(ctx context.Context, o Options) error {
	url := d.name
	if d.fc = astiav.AllocFormatContext(); d.fc == nil {
		return fmt.Errorf("open %s: cannot allocate a format context", url)
	}
	// The flag must exist before anything can call Interrupt: AfterFunc
	// below is what may call it from another goroutine.
	d.abort = d.fc.SetInterruptCallback()
	d.pin.Pin(d.abort)
	stop := context.AfterFunc(ctx, d.Interrupt)
	defer stop()
	cut := func(err error) error {
		if !d.interrupted.Load() {
			return err
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// The caller's deadline: the source did not answer in time.
				return &openError{msg: "open " + url + ": " + ErrTimeout.Error(), errs: []error{ErrTimeout, ErrInterrupted, context.Cause(ctx)}}
			}
			return fmt.Errorf("open %s: %w (%w)", url, ErrInterrupted, context.Cause(ctx))
		}
		return fmt.Errorf("open %s: %w", url, ErrInterrupted)
	}
	var inFmt *astiav.InputFormat
	if o.Format != "" {
		if inFmt = astiav.FindInputFormat(o.Format); inFmt == nil {
			return fmt.Errorf("open %s: FFmpeg has no input format %q", url, o.Format)
		}
	}
	var dict *astiav.Dictionary
	if len(o.Input) > 0 {
		dict = astiav.NewDictionary()
		defer dict.Free()
		for k, v := range o.Input {
			if err := dict.Set(k, v, 0); err != nil {
				return fmt.Errorf("open %s: option %s=%s: %w", url, k, v, err)
			}
		}
	}
	t0 := time.Now()
	if err := d.fc.OpenInput(d.url, inFmt, dict); err != nil {
		// FFmpeg frees the context when OpenInput fails.
		d.fc = nil
		return cut(classifyOpen(url, "", err, time.Since(t0), o.Input))
	}
	d.opened = true
	t0 = time.Now()
	if err := d.fc.FindStreamInfo(nil); err != nil {
		return cut(classifyOpen(url, "read stream info: ", err, time.Since(t0), o.Input))
	}
	if d.interrupted.Load() {
		// FindStreamInfo may stop early without an error when interrupted,
		// leaving stream parameters half known.
		return cut(nil)
	}
	for _, s := range d.fc.Streams() {
		if s.CodecParameters().MediaType() == astiav.MediaTypeVideo {
			d.stream = s
			break
		}
	}
	if d.stream == nil {
		return fmt.Errorf("open %s: no video stream", url)
	}
	par := d.stream.CodecParameters()
	codec := astiav.FindDecoder(par.CodecID())
	if codec == nil {
		return fmt.Errorf("open %s: no decoder for codec %s", url, par.CodecID())
	}
	if d.cc = astiav.AllocCodecContext(codec); d.cc == nil {
		return fmt.Errorf("open %s: cannot allocate a %s decoder", url, codec.Name())
	}
	if err := par.ToCodecContext(d.cc); err != nil {
		return fmt.Errorf("open %s: codec parameters: %w", url, err)
	}
	d.attachHW(o.HWDecode)
	if err := d.cc.Open(codec, nil); err != nil {
		return fmt.Errorf("open %s: open %s decoder: %w", url, codec.Name(), err)
	}
	if d.pkt = astiav.AllocPacket(); d.pkt == nil {
		return fmt.Errorf("open %s: cannot allocate a packet", url)
	}
	if d.frame = astiav.AllocFrame(); d.frame == nil {
		return fmt.Errorf("open %s: cannot allocate a frame", url)
	}
	if r := d.stream.AvgFrameRate(); r.Num() > 0 && r.Den() > 0 {
		d.frameDur = time.Duration(float64(time.Second) * float64(r.Den()) / float64(r.Num()))
	}
	d.declared = d.declaredLength()
	if o.Tap != nil {
		d.tap, d.tapBegan = o.Tap, true
		o.Tap.Begin(par, d.stream.TimeBase())
	}
	return nil
}

// declaredLength is the video stream's length as the container states it,
// or 0 when it states none (live sources, elementary streams) or FFmpeg
// only guessed it from the bit rate.
func (d *Decoder) declaredLength() time.Duration {
	if durationGuessed(d.fc) {
		return 0
	}
	if sd := d.stream.Duration(); sd > 0 && sd != astiav.NoPtsValue {
		return d.toDuration(sd)
	}
	// Matroska states one length for the whole file: the video's only when
	// nothing else (a longer audio track) may be what it measures.
	if fd := d.fc.Duration(); d.fc.NbStreams() == 1 && fd > 0 && fd != astiav.NoPtsValue {
		return time.Duration(fd) * time.Microsecond
	}
	return 0
}

// toDuration converts a timestamp of the video stream to time since the
// stream's start.
func (d *Decoder) toDuration(ts int64) time.Duration {
	return time.Duration(float64(ts) * d.stream.TimeBase().ToDouble() * float64(time.Second))
}

// track notes how far into the stream a packet reaches.
func (d *Decoder) track(pkt *astiav.Packet) {
	ts := pkt.Pts()
	if ts == astiav.NoPtsValue {
		ts = pkt.Dts()
	}
	if ts == astiav.NoPtsValue {
		return
	}
	if start := d.stream.StartTime(); start != astiav.NoPtsValue {
		ts -= start
	}
	if end := d.toDuration(ts + max(pkt.Duration(), 0)); end > d.reached {
		d.reached = end
	}
}

// truncated reports, at a clean end of input, whether the input stopped
// well short of its declared length. The slack absorbs containers whose
// stated length rounds up or counts a last frame's display time.
func (d *Decoder) truncated() error {
	// A live session announcing a range (a server replaying a clip) that
	// drops has not truncated any file: its caller reports the drop.
	if d.declared <= 0 || d.live {
		return nil
	}
	slack := max(500*time.Millisecond, d.declared/50, 3*d.frameDur)
	if d.reached >= d.declared-slack {
		return nil
	}
	ms := time.Millisecond
	return fmt.Errorf("read %s: %w: it ends at %v of the %v its header declares", d.name, ErrTruncated, d.reached.Round(ms), d.declared.Round(ms))
}

// Size reports the coded picture size announced by the stream.
func (d *Decoder) Size() (w, h int) {
	p := d.stream.CodecParameters()
	return p.Width(), p.Height()
}

// FrameCount estimates the frames of a file: the container's count when it
// has one, else duration x average frame rate; 0 when neither is known
// (live streams).
func (d *Decoder) FrameCount() int64 {
	if n := d.stream.NbFrames(); n > 0 {
		return n
	}
	r := d.stream.AvgFrameRate()
	if dur := d.fc.Duration(); dur > 0 && r.Num() > 0 && r.Den() > 0 {
		return int64(float64(dur) / 1e6 * r.ToDouble())
	}
	return 0
}

// Next returns the next decoded frame, or io.EOF after the last one. A read
// error in the middle of an input (a truncated or damaged file, a dropped
// connection) first drains the frames the decoder still holds, then returns
// that error wrapped, so nothing decoded before the damage is lost.
func (d *Decoder) Next() (*Frame, error) {
	for {
		if d.done {
			if d.damaged != nil {
				return nil, d.damaged
			}
			return nil, io.EOF
		}
		err := d.cc.ReceiveFrame(d.frame)
		switch {
		case err == nil:
			f, err := d.emit()
			d.frame.Unref()
			return f, err
		case errors.Is(err, astiav.ErrEof):
			d.done = true
			continue
		case !errors.Is(err, astiav.ErrEagain):
			return nil, fmt.Errorf("decode %s: %w", d.name, err)
		}
		if d.draining {
			// The decoder wants input after a flush: nothing more will come.
			d.done = true
			continue
		}
		if err := d.feed(); err != nil {
			return nil, err
		}
	}
}

// feed sends the next packet of the video stream to the decoder, or starts
// draining it at the end of the input.
func (d *Decoder) feed() error {
	for {
		err := d.fc.ReadFrame(d.pkt)
		if err != nil {
			switch {
			case d.interrupted.Load():
				d.damaged = fmt.Errorf("read %s: %w", d.name, ErrInterrupted)
			case errors.Is(err, astiav.ErrEtimedout):
				// FFmpeg's socket timeout: the source went quiet.
				d.damaged = &openError{msg: "read " + d.name + ": " + err.Error(), errs: []error{ErrTimeout, err}}
			case !errors.Is(err, astiav.ErrEof):
				d.damaged = fmt.Errorf("read %s: %w", d.name, err)
			default:
				d.damaged = d.truncated()
			}
			d.draining = true
			if err := d.cc.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
				return fmt.Errorf("decode %s: flush: %w", d.name, err)
			}
			return nil
		}
		d.packets.Add(1)
		if d.pkt.StreamIndex() != d.stream.Index() {
			d.pkt.Unref()
			continue
		}
		d.track(d.pkt)
		d.lastArrive = time.Now()
		d.arrivals[d.nArrivals%arrivalRing] = arrival{d.pkt.Pts(), d.lastArrive}
		d.nArrivals++
		if d.tap != nil {
			d.tap.Packet(d.pkt)
		}
		err = d.cc.SendPacket(d.pkt)
		d.pkt.Unref()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			if errors.Is(err, astiav.ErrInvaliddata) {
				// A damaged packet costs its own picture, not the stream.
				d.damagedN.Add(1)
				continue
			}
			return fmt.Errorf("decode %s: %w", d.name, err)
		}
		return nil
	}
}

func (d *Decoder) emit() (*Frame, error) {
	if frameDamaged(d.frame) {
		d.damagedN.Add(1)
	}
	pic, err := d.software(d.frame)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.name, err)
	}
	rgb, err := d.rgb.convert(pic)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.name, err)
	}
	pts := d.lastPTS + d.frameDur
	if d.seq == 0 {
		pts = 0
	}
	if ts := d.frame.Pts(); ts != astiav.NoPtsValue {
		if start := d.stream.StartTime(); start != astiav.NoPtsValue {
			ts -= start
		}
		pts = d.toDuration(ts)
	}
	f := &Frame{
		StreamID: d.id,
		Seq:      d.seq,
		PTS:      pts,
		Captured: d.arrived(d.frame.Pts()),
		Width:    d.frame.Width(),
		Height:   d.frame.Height(),
		RGB:      rgb,
	}
	d.seq++
	d.lastPTS = pts
	return f, nil
}

// arrived is when the packet of pts was read; a picture without a pts
// (or whose packet is out of the ring) gets the last packet's time, the
// one that made the decoder give it out.
func (d *Decoder) arrived(pts int64) time.Time {
	if pts != astiav.NoPtsValue {
		for i := 1; i <= min(d.nArrivals, arrivalRing); i++ {
			if a := d.arrivals[(d.nArrivals-i)%arrivalRing]; a.pts == pts {
				return a.at
			}
		}
	}
	if d.lastArrive.IsZero() {
		return time.Now()
	}
	return d.lastArrive
}

// Close releases every native object of the decoder. It is idempotent and
// safe on a partly opened decoder.
func (d *Decoder) Close() {
	if d.tapBegan {
		d.tapBegan = false
		d.tap.End()
	}
	d.rgb.close()
	d.hw.close()
	d.hw = nil
	if d.frame != nil {
		d.frame.Free()
		d.frame = nil
	}
	if d.pkt != nil {
		d.pkt.Free()
		d.pkt = nil
	}
	if d.cc != nil {
		d.cc.Free()
		d.cc = nil
	}
	if d.fc != nil {
		if d.opened {
			// CloseInput frees the context too.
			d.fc.CloseInput()
		} else {
			d.fc.Free()
		}
		d.fc = nil
	}
	// FFmpeg no longer holds the flag's address; Interrupt may still write
	// it, as ordinary Go memory.
	d.pin.Unpin()
}
