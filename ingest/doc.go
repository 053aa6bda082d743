// Package ingest owns opening sources by URL: which kind a URL names (file,
// RTSP, camera, HTTP, image folder), the options each kind needs, and —
// for live sources — reconnecting after drops and reporting source state.
//
// Parse reads a URL into a Source; a Runner turns the Source into frames:
//
//	src, err := ingest.Parse("rtsp://user:pass@cam.local/stream")
//	r, err := ingest.NewRunner(src, ingest.Config{Transport: "udp", OnState: report})
//	err = r.Run(ctx, func(f *decode.Frame) error { return queue.Offer(ctx, f) })
//
// For live kinds the Runner never gives up unless Config.MaxAttempts says
// so: any drop (a read error, the end of the stream, a failed open, no data
// for Config.ReadTimeout) is followed by another attempt after a capped
// exponential backoff. Files and image folders end at their end, or start
// again with Config.Loop.
//
// The Runner is the one owner of a stream's clock and name: every frame it
// hands out carries Config.StreamID, a Seq that counts from 0 and never
// restarts, and a PTS that only grows, across reconnects and loop passes
// alike. Consumers take them as they are. Image folders also name each
// frame's file (decode.Frame.Name), skip an unreadable picture with a
// warning (Runner.Skipped counts them) and keep every picture's own size.
//
// Passwords in URLs, and secrets in their queries (?token=, ?password=,
// ?key=...), reach FFmpeg and nothing else: messages, logs and stream
// names show them as xxxxx. A retrying or failed source says why in words
// a person can act on (Event.Reason): a refused password is
// "unauthorized" and waits the longest backoff; a server that accepts the
// connection and says nothing has "timed out".
package ingest
