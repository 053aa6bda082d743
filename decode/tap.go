package decode

import "github.com/asticode/go-astiav"

// PacketTap sees the compressed packets of the video stream a Decoder
// decodes, as they were demuxed: what a recorder copies into files without
// re-encoding them. Its methods are called on the decoding goroutine, in
// order, and must not block: a tap queues what it keeps and returns.
type PacketTap interface {
	// Begin is called once per opened input, before its first packet,
	// with the video stream's parameters and time base; par is valid only
	// during the call (copy it to keep it).
	Begin(par *astiav.CodecParameters, timeBase astiav.Rational)
	// Packet gets each packet of the stream before it is decoded; pkt is
	// valid only during the call (Clone it to keep it).
	Packet(pkt *astiav.Packet)
	// End is called once when an input that began closes.
	End()
}
