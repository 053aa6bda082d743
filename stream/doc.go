// Package stream is the home of what leaves htcstream as pictures and
// files; it holds no code itself, only its sub-packages, each named for
// what it owns:
//
//   - stream/encode: the H.264/VP8 encoders (RGB to YUV, FFmpeg through
//     go-astiav) and the mp4 file they write (FileSink), which both the
//     live view and the recordings use.
//   - stream/web: the browser side: the WebRTC hub (pion), WHEP, the
//     embedded viewer page, and the HTTP server in front of them (loopback
//     by default, token or basic auth, TLS, CORS allow-list, Host checks,
//     limits, /streams, snapshots of the live picture and of events).
//   - stream/record: the files a run keeps besides video: detections as
//     JSON lines, and the snapshot store of the events' best frames.
//
// The tracker-driven events (Event, its MQTT and webhook outputs) are the
// top-level package events; the pipeline wires all of these to its sinks.
package stream
