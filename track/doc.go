// Package track follows instances across the frames of one stream and says
// when each one appears, changes and goes away, so that the pipeline can
// give detections a stable track_id and turn tracks into events.
//
// The tracker is ByteTrack's association (Zhang et al., ECCV 2022;
// yolox/tracker/byte_tracker.py in ifzhang/ByteTrack), rewritten: detections
// that score high are matched to tracks first; the low-scoring ones, which a
// plain threshold would throw away, are then matched to the tracks still
// unmatched, because a partly occluded object usually scores low and this is
// what keeps its id through the occlusion. Matching is optimal (Hungarian)
// on box IoU against each track's Kalman-predicted box, per class, with mask
// IoU breaking near-ties between crossing objects.
//
// The package is pure: no I/O, no clock reads, no cgo. The caller passes each
// frame's sequence number and pts, and the detections as the detection
// package writes them (a leaf, so track does not pull ONNX Runtime or OpenCV
// into whoever imports it); a track keeps the class of its first detection
// and only ever matches detections of that class. One Tracker per stream; it is not safe for
// concurrent use, which a stream's single result goroutine never needs.
package track
