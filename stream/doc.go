// Package stream owns what leaves htcstream: WebRTC publishing to browsers
// (pion, WHEP) with the embedded viewer page, the encoders that feed it, and
// the file and detection sinks.
package stream
