// Package infer owns everything between a decoded RGB frame and the raw
// outputs of the model's graphs: loading a model bundle and checking it
// against the contract, the ONNX Runtime library and its sessions,
// preprocessing (resize, flip, normalise, pad), batching frames of many
// streams, and the test-time-augmentation views.
//
// infer knows nothing of HTC's semantics: decoding proposals, ensembling
// stages and pasting masks belong to package cascade.
package infer
