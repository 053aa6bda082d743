// Package decode owns demuxing and decoding with FFmpeg (through go-astiav)
// and the conversion of decoded pictures to packed RGB with swscale. It hands
// out Frames whose pixels live in Go memory, so a Frame needs no Free; the
// native AVFrame, AVPacket, codec and format contexts stay inside the
// Decoder, which releases each exactly once on Close.
package decode
