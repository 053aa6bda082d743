package infer

import "time"

// BatcherConfig configures how the model's runs are batched (the
// pipeline's model queue: frames of several streams of one size in one
// run).
type BatcherConfig struct {
	// Size is the largest batch; a batch leaves as soon as it is full.
	// Default 1.
	Size int
	// Deadline is the longest the first frame of a batch that is not full
	// waits for more while the model is free (DeepStream nvstreammux's
	// batched-push-timeout); 0 = run at once with what is there.
	Deadline time.Duration
}
