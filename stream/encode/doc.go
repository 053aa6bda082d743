// Package encode turns RGB frames into H.264 or VP8: packets for the live
// view (Encoder) or an mp4 file (FileSink), with FFmpeg through go-astiav.
// Every frame keeps its own timestamp on a 90 kHz clock, so variable frame
// rates are kept as they happened.
package encode
