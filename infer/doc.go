// Package infer owns everything between a decoded RGB frame and the raw
// outputs of the model's graphs: loading a model bundle and checking it
// against the contract, the ONNX Runtime library and its sessions,
// preprocessing (resize, flip, normalise, pad) of a batch of frames, and
// the test-time-augmentation views. Which frames make a batch is the
// pipeline's model queue's choice (BatcherConfig sets its size).
//
// infer knows nothing of HTC's semantics: decoding proposals, ensembling
// stages and pasting masks belong to package cascade.
package infer
