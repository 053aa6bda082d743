// Package record writes what a run keeps besides its video: every frame's
// detections as JSON lines (docs/outputs.md), and the snapshot store that
// keeps the JPEG of each event's best frame within count, age and size
// limits. Recordings of the stream belong here too.
package record
