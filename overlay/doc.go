// Package overlay owns drawing results onto frames: instance masks (alpha
// blend and contour), boxes, class labels with scores and a HUD. It knows
// nothing of models: it draws detections, whatever produced them.
//
// Masks are blended in Go over each instance's own region only, because mask
// drawing is where peers' pipelines lose their time. Boxes and labels are
// drawn in Go too: a cgo call costs more than what most of them draw.
// OpenCV only rasterises the label font's glyphs, once (see glyphs.go).
package overlay
