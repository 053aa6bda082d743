package pipeline

import (
	"context"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/ingest"
)

// ReadSource reads a video, an image folder or a stream through the same
// source code as a run (ingest: its clock, its frame names, its handling
// of unreadable images), handing every frame to fn in order, until the
// source ends, maxFrames (> 0) frames were read, or fn returns an error
// (returned as it is). eval and bench read their frames with it.
func ReadSource(ctx context.Context, location string, maxFrames int, fn func(*decode.Frame) error) error {
	src, err := ingest.Parse(location)
	if err != nil {
		return err
	}
	s := Limited(&IngestSource{ID: StreamName(location, map[string]bool{}), Source: src}, maxFrames)
	var fnErr error
	err = s.Run(ctx, func(f *decode.Frame) bool {
		fnErr = fn(f)
		return fnErr == nil
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}
