// Package record writes what a run keeps besides its video: every frame's
// detections as JSON lines (docs/outputs.md), the snapshot store that keeps
// the JPEG of each event's best frame within count, age and size limits,
// and each camera's continuous recording: its own packets copied into MP4
// segments (Recorder, a decode.PacketTap), with retention, and the clips
// cut from them around events (CutClip).
package record
