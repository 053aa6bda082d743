package decode

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/asticode/go-astiav"
)

// Frame is one decoded picture as packed RGB24 (3 bytes a pixel, rows of
// Width*3 bytes, no padding). Its memory is Go's: pass it on freely.
type Frame struct {
	StreamID string
	// Seq counts the frames this decoder produced, from 0.
	Seq int64
	// PTS is the presentation time relative to the stream's start; frames
	// without a timestamp get one derived from the frame rate.
	PTS time.Duration
	// Captured is the wall-clock time the frame left the decoder: the
	// reference for latency measurements downstream.
	Captured      time.Time
	Width, Height int
	RGB           []byte
}

// Options configures a Decoder. The zero value decodes the first video stream
// of a local file with FFmpeg's defaults.
type Options struct {
	// StreamID names the stream in every Frame; default: the URL.
	StreamID string
	// Format forces an input format (e.g. "v4l2"); default: probed.
	Format string
	// Input holds demuxer/protocol options (e.g. "rtsp_transport": "tcp").
	Input map[string]string
}

// Decoder demuxes and decodes the best video stream of one input. It is used
// by one goroutine at a time.
type Decoder struct {
	url      string
	id       string
	fc       *astiav.FormatContext
	opened   bool
	cc       *astiav.CodecContext
	pkt      *astiav.Packet
	frame    *astiav.Frame
	stream   *astiav.Stream
	rgb      rgbConverter
	seq      int64
	draining bool
	done     bool
	frameDur time.Duration
	lastPTS  time.Duration
	damaged  error
}

// Open opens url and prepares the decoder of its best video stream.
func Open(url string, o Options) (*Decoder, error) {
	d := &Decoder{url: url, id: o.StreamID}
	if d.id == "" {
		d.id = url
	}
	if err := d.open(o); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Decoder) open(o Options) error {
	url := d.url
	if d.fc = astiav.AllocFormatContext(); d.fc == nil {
		return fmt.Errorf("open %s: cannot allocate a format context", url)
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
	if err := d.fc.OpenInput(url, inFmt, dict); err != nil {
		return fmt.Errorf("open %s: %w", url, err)
	}
	d.opened = true
	if err := d.fc.FindStreamInfo(nil); err != nil {
		return fmt.Errorf("open %s: read stream info: %w", url, err)
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
	return nil
}

// Size reports the coded picture size announced by the stream.
func (d *Decoder) Size() (w, h int) {
	p := d.stream.CodecParameters()
	return p.Width(), p.Height()
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
			return nil, fmt.Errorf("decode %s: %w", d.url, err)
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
			if !errors.Is(err, astiav.ErrEof) {
				d.damaged = fmt.Errorf("read %s: %w", d.url, err)
			}
			d.draining = true
			if err := d.cc.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
				return fmt.Errorf("decode %s: flush: %w", d.url, err)
			}
			return nil
		}
		if d.pkt.StreamIndex() != d.stream.Index() {
			d.pkt.Unref()
			continue
		}
		err = d.cc.SendPacket(d.pkt)
		d.pkt.Unref()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			if errors.Is(err, astiav.ErrInvaliddata) {
				// A damaged packet costs its own picture, not the stream.
				continue
			}
			return fmt.Errorf("decode %s: %w", d.url, err)
		}
		return nil
	}
}

func (d *Decoder) emit() (*Frame, error) {
	rgb, err := d.rgb.convert(d.frame)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", d.url, err)
	}
	pts := d.lastPTS + d.frameDur
	if d.seq == 0 {
		pts = 0
	}
	if ts := d.frame.Pts(); ts != astiav.NoPtsValue {
		tb := d.stream.TimeBase()
		start := d.stream.StartTime()
		if start == astiav.NoPtsValue {
			start = 0
		}
		pts = time.Duration(float64(ts-start) * tb.ToDouble() * float64(time.Second))
	}
	f := &Frame{
		StreamID: d.id,
		Seq:      d.seq,
		PTS:      pts,
		Captured: time.Now(),
		Width:    d.frame.Width(),
		Height:   d.frame.Height(),
		RGB:      rgb,
	}
	d.seq++
	d.lastPTS = pts
	return f, nil
}

// Close releases every native object of the decoder. It is idempotent and
// safe on a partly opened decoder.
func (d *Decoder) Close() {
	d.rgb.close()
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
}
