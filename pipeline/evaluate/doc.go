// Package evaluate runs a model over a source to measure it rather than to
// serve it: Eval scores it against COCO ground truth (a picture folder, or
// a video with its annotations beside it), Bench times each of its steps.
// Both read frames through the same sources as a run, so what they measure
// is what a run gets; htcstream eval and bench only parse flags and print.
package evaluate
