// Package pipeline wires htcstream's stages — sources, the model's shared queue,
// the model, drawing and sinks — with goroutines and channels, and owns
// their lifecycle and backpressure.
//
// Each value has one owner at a time and moves forward only. Live sources
// keep just their newest waiting frame (latency stays bounded; drops are
// counted); file sources block (nothing is skipped). All streams share one
// queue and one model. Shutdown is in two steps: Drain stops the sources
// and lets every frame in flight reach the sinks, which then flush; a hard
// cancel abandons what is in flight but still closes every sink properly.
package pipeline
