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
	s, err := OpenSource(location, maxFrames)
	if err != nil {
		return err
	}
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

// OpenSource is a video, image folder or stream as a run's Source, through
// the same source code as a run, stopping after maxFrames (> 0) frames.
func OpenSource(location string, maxFrames int) (Source, error) {
	src, err := ingest.Parse(location)
	if err != nil {
		return nil, err
	}
	return Limited(&IngestSource{ID: StreamName(location, map[string]bool{}), Source: src}, maxFrames), nil
}
