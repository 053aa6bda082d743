// Package cascade owns the data-dependent half of Hybrid Task Cascade's test
// procedure, in Go: RPN anchors, proposal decoding and NMS, the ensemble of
// the cascade stages' class scores, test-time-augmentation merging,
// class-wise NMS, and pasting instance masks into frames. The dense tensor
// work runs in the model's graphs (package infer); this package follows
// mmdetection 2.x's HTC test code, the code behind the paper's numbers,
// and says where it chooses otherwise.
package cascade
