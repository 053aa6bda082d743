package cascade

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"
	"gocv.io/x/gocv"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/infer"
)

// Image is one frame to segment: packed 8-bit pixels, 3 channels.
type Image struct {
	Width, Height int
	Pix           []byte
	Order         infer.PixelOrder
}

// Result is what the model found in one frame.
type Result struct {
	Width, Height int
	Detections    []detection.Detection
	// Semantic, when asked for (Options.Semantic), labels every frame pixel
	// (row-major) with the semantic branch's channel: the bundle's
	// Manifest.SemanticClasses()[l] names label l and StuffChannels()[l]
	// says whether it is stuff. In the COCO-stuff layout label l is
	// COCO-stuff id l+1, not thing label l; old bundles: things 0..C-1, then
	// stuff C..C+K-1.
	Semantic []uint8
}

// Options configures a Model beyond what its bundle fixes.
type Options struct {
	// Views is the TTA plan: every frame is run at each view and the
	// results merged. Default: one view at the bundle's first test scale.
	Views []infer.View
	// Ensemble combines the stages' class scores; default: logits mode,
	// equal weights (mmdetection's HTC).
	Ensemble Ensemble
	// ScoreThreshold overrides the bundle's R-CNN score threshold when > 0
	// (the bundle's 0.001 suits evaluation; display wants ~0.3).
	ScoreThreshold float32
	// Stages, when set, are the cascade stages (1-based) whose class scores
	// and masks are used: the stage-wise test of the HTC paper's Table 4
	// ("--stages 3": the last stage alone). The ensemble weights of the
	// other stages become 0; boxes stay the last stage's regression and
	// Detection.StageScores keep every stage. nil: all stages.
	Stages []int
	// SkipMasks leaves the mask heads out (boxes only).
	SkipMasks bool
	// Semantic asks for the per-pixel semantic map of every frame, from
	// the first view of the plan.
	Semantic bool
}

// Timings accumulates where a Detect call spent its time.
type Timings struct {
	Preprocess, Backbone, Proposals, RoIAlign, BBoxHeads, Merge, MaskHeads, Paste time.Duration
}

// TimingStep is one step of Timings under its one name.
type TimingStep struct {
	// Name is the step's label in /metrics (htcstream_stage_seconds).
	Name string
	// Title says what runs the step, for tables: "backbone graph",
	// "proposals (Go)".
	Title string
	D     time.Duration
}

// Steps lists t's steps in the order a frame goes through them.
func (t Timings) Steps() []TimingStep {
	return []TimingStep{
		{"preprocess", "preprocess (Go+OpenCV)", t.Preprocess},
		{"backbone", "backbone graph", t.Backbone},
		{"proposals", "proposals (Go)", t.Proposals},
		{"roi_align", "roi align (Go)", t.RoIAlign},
		{"bbox_heads", "box head graphs", t.BBoxHeads},
		{"merge", "ensemble+merge (Go)", t.Merge},
		{"mask_heads", "mask_heads graph", t.MaskHeads},
		{"paste", "mask paste (Go)", t.Paste},
	}
}

// Add sums another call's timings into t.
func (t *Timings) Add(o Timings) {
	t.Preprocess += o.Preprocess
	t.Backbone += o.Backbone
	t.Proposals += o.Proposals
	t.RoIAlign += o.RoIAlign
	t.BBoxHeads += o.BBoxHeads
	t.Merge += o.Merge
	t.MaskHeads += o.MaskHeads
	t.Paste += o.Paste
}

// Graph is the time spent inside the graphs.
func (t Timings) Graph() time.Duration { return t.Backbone + t.BBoxHeads + t.MaskHeads }

// Model is the network's own compute: the graphs and the RoIAlign Go runs
// between the box stages.
func (t Timings) Model() time.Duration { return t.Graph() + t.RoIAlign }

// Go is the time spent in Go's own steps around the network (preprocessing
// included; RoIAlign, part of the network, is not).
func (t Timings) Go() time.Duration {
	return t.Preprocess + t.Proposals + t.Merge + t.Paste
}

// Model runs HTC's test procedure on frames with a loaded bundle. A Model is
// used by one goroutine at a time (the pipeline's inference goroutine).
type Model struct {
	b        *infer.Bundle
	m        *infer.Manifest
	norm     infer.Normalization
	grids    *AnchorGrids
	rpn      RPNConfig
	det      DetectConfig
	ensemble Ensemble
	views    []infer.View
	masks    bool
	stages   []int // 0-based stages whose masks are averaged
	semantic bool
	// semClasses is the number of semantic channels the manifest names.
	semClasses int
	// roiFeats and nhwc are the box stages' pooled features and feature
	// maps (channels last), kept between calls.
	roiFeats, nhwc []float32
	// trace, when set (the parity test's), receives the next Detect
	// call's per-view intermediates; nil in production.
	trace *detectTrace
}

// detectTrace holds a Detect call's intermediates, laid out as the graphs'
// inputs and outputs (all frames' rows together).
type detectTrace struct {
	shared [][]detection.Box // per frame, the proposals every view scores (frame pixels)
	views  []viewTrace
	rois   [][]int // per frame, the index in shared of each detection's RoI
}

// viewTrace is one view's head graph inputs and outputs.
type viewTrace struct {
	rois, logits, boxes []float32 // box stages: [R,5], [R,T,C+1], [R,T,4]
	maskRois, masks     []float32 // mask_heads: [K,5], [K,T,S,S]
	maskLabels          []int64   // [K]
}

// scalarOnce says once per process that RoIAlign has no vector path.
var scalarOnce sync.Once

// NewModel prepares the test procedure of bundle b.
func NewModel(b *infer.Bundle, o Options) (*Model, error) {
	m := b.Manifest
	if o.Ensemble.Mode == "" {
		o.Ensemble.Mode = EnsembleLogits
	}
	if err := o.Ensemble.Validate(m.NumStages); err != nil {
		return nil, err
	}
	stages, err := chooseStages(o.Stages, m.NumStages)
	if err != nil {
		return nil, err
	}
	if o.Stages != nil {
		w := make([]float32, m.NumStages)
		for _, st := range stages {
			w[st] = 1
			if o.Ensemble.Weights != nil {
				w[st] = o.Ensemble.Weights[st]
			}
		}
		o.Ensemble.Weights = w
		if err := o.Ensemble.Validate(m.NumStages); err != nil {
			return nil, fmt.Errorf("stages %v: %w", o.Stages, err)
		}
	}
	views := o.Views
	if len(views) == 0 {
		views = []infer.View{{Scale: m.DefaultScale()}}
	}
	for _, v := range views {
		if v.Scale.Long <= 0 || v.Scale.Short <= 0 {
			return nil, fmt.Errorf("tta view scale %dx%d", v.Scale.Long, v.Scale.Short)
		}
	}
	clip := m.RPN.DeltaClip
	if clip == 0 {
		clip = DefaultDeltaClip
	}
	semClasses := len(m.SemanticClasses())
	if o.Semantic && (semClasses < 1 || semClasses > 256) {
		return nil, fmt.Errorf("semantic map: the bundle names %d semantic classes, a byte map holds 1..256", semClasses)
	}
	if !RoIAlignVectorised() {
		scalarOnce.Do(func() {
			slog.Warn("roi align runs scalar (the CPU lacks AVX2/FMA, or the build is not amd64 or has the purego tag): " +
				"the box stages are several times slower")
		})
	}
	det := DetectConfig{ScoreThreshold: m.RCNN.ScoreThreshold, NMSIoU: m.RCNN.NMSIoU, MaxPerImage: m.RCNN.MaxPerImage}
	if o.ScoreThreshold > 0 {
		det.ScoreThreshold = o.ScoreThreshold
	}
	return &Model{
		b: b, m: m, norm: m.Normalization(),
		grids: NewAnchorGrids(AnchorConfig{Strides: m.Anchors.Strides, Scales: m.Anchors.Scales, Ratios: m.Anchors.Ratios}),
		rpn: RPNConfig{NMSPre: m.RPN.NMSPre, NMSIoU: m.RPN.NMSIoU, MaxProposals: m.RPN.MaxProposals,
			MinBoxSize: m.RPN.MinBoxSize, DeltaClip: clip},
		det:        det,
		ensemble:   o.Ensemble,
		views:      views,
		masks:      !o.SkipMasks,
		stages:     stages,
		semantic:   o.Semantic,
		semClasses: semClasses,
	}, nil
}

// chooseStages checks 1-based stage numbers and returns them 0-based, in
// order; nil: every stage.
func chooseStages(sel []int, t int) ([]int, error) {
	if sel == nil {
		out := make([]int, t)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("stages: none chosen")
	}
	seen := make([]bool, t)
	for _, s := range sel {
		if s < 1 || s > t {
			return nil, fmt.Errorf("stage %d: the bundle has stages 1..%d", s, t)
		}
		if seen[s-1] {
			return nil, fmt.Errorf("stage %d chosen twice", s)
		}
		seen[s-1] = true
	}
	var out []int
	for i, ok := range seen {
		if ok {
			out = append(out, i)
		}
	}
	return out, nil
}

// Views returns the TTA plan in use.
func (md *Model) Views() []infer.View { return md.views }

// viewRun holds one view's graph outputs for a batch. The backbone outputs
// are owned here and destroyed by release.
type viewRun struct {
	view  infer.View
	prep  []infer.Prepared
	outs  []ort.Value // backbone outputs, contract order
	sizes *ort.Tensor[float32]
}

func (v *viewRun) release() {
	for _, o := range v.outs {
		if o != nil {
			o.Destroy()
		}
	}
	v.outs = nil
	if v.sizes != nil {
		v.sizes.Destroy()
		v.sizes = nil
	}
}

// Detect segments a batch of frames of one size with every view of the
// plan and returns one Result per frame.
func (md *Model) Detect(frames []Image) ([]Result, Timings, error) {
	var tm Timings
	if len(frames) == 0 {
		return nil, tm, nil
	}
	w, h := frames[0].Width, frames[0].Height
	for i, f := range frames {
		if f.Width != w || f.Height != h {
			return nil, tm, fmt.Errorf("batch mixes frame sizes: %dx%d and %dx%d (frame %d)", w, h, f.Width, f.Height, i)
		}
		if f.Width <= 0 || f.Height <= 0 || len(f.Pix) < f.Width*f.Height*3 {
			return nil, tm, fmt.Errorf("frame %d: %dx%d with %d bytes of pixels", i, f.Width, f.Height, len(f.Pix))
		}
	}
	runs := make([]*viewRun, 0, len(md.views))
	defer func() {
		for _, r := range runs {
			r.release()
		}
	}()
	// Proposals of every view, mapped back to frame pixels, per frame.
	props := make([][][]Proposal, len(frames))
	for _, v := range md.views {
		run, err := md.runBackbone(frames, v, &tm)
		if err != nil {
			return nil, tm, err
		}
		runs = append(runs, run)
		t0 := time.Now()
		for i := range frames {
			p, err := md.proposals(run, i)
			if err != nil {
				return nil, tm, err
			}
			for k := range p {
				p[k].Box = toFrame(p[k].Box, run.prep[i])
			}
			props[i] = append(props[i], p)
		}
		tm.Proposals += time.Since(t0)
	}
	t0 := time.Now()
	shared := make([][]detection.Box, len(frames))
	for i := range frames {
		shared[i] = mergeProposals(props[i], md.rpn)
	}
	tm.Proposals += time.Since(t0)
	if md.trace != nil {
		md.trace.shared = shared
		md.trace.views = make([]viewTrace, len(runs))
	}

	dets, err := md.detectBoxes(runs, shared, w, h, &tm)
	if err != nil {
		return nil, tm, err
	}
	if md.masks {
		if err := md.segment(runs, dets, w, h, &tm); err != nil {
			return nil, tm, err
		}
	}
	out := make([]Result, len(frames))
	for i := range frames {
		out[i] = Result{Width: w, Height: h, Detections: dets[i]}
		if md.semantic {
			t0 := time.Now()
			if out[i].Semantic, err = semanticMap(runs[0], i, w, h, md.semClasses); err != nil {
				return nil, tm, err
			}
			tm.Paste += time.Since(t0)
		}
	}
	return out, tm, nil
}

// semanticMap labels each pixel of frame i with the channel whose semantic
// logit is highest in the stride-8 cell the pixel falls in (nearest
// sampling: the map is for display and statistics, not a finer
// segmentation than the branch gives).
func semanticMap(run *viewRun, i, w, h, classes int) ([]uint8, error) {
	logits, shape, err := infer.Float32Output(run.outs[outSemanticLogits])
	if err != nil || len(shape) != 4 {
		return nil, fmt.Errorf("semantic_logits: %v (shape %v)", err, shape)
	}
	s, fh, fw := int(shape[1]), int(shape[2]), int(shape[3])
	if s > 256 {
		return nil, fmt.Errorf("semantic_logits has %d classes, more than a byte map holds", s)
	}
	if s != classes {
		return nil, fmt.Errorf("semantic_logits has %d channels, the manifest names %d semantic classes", s, classes)
	}
	plane := fh * fw
	base := logits[i*s*plane : (i+1)*s*plane]
	best := make([]uint8, plane)
	for c := 0; c < plane; c++ {
		arg, top := 0, base[c]
		for k := 1; k < s; k++ {
			if v := base[k*plane+c]; v > top {
				arg, top = k, v
			}
		}
		best[c] = uint8(arg)
	}
	p := run.prep[i]
	cols := make([]int, w)
	for x := range cols {
		vx := (float64(x) + 0.5) * p.ScaleX
		if p.Flip {
			vx = float64(p.Width) - vx
		}
		cols[x] = min(max(int(vx/8), 0), fw-1)
	}
	out := make([]uint8, w*h)
	for y := 0; y < h; y++ {
		fy := min(max(int((float64(y)+0.5)*p.ScaleY/8), 0), fh-1)
		row := best[fy*fw:]
		o := out[y*w : (y+1)*w]
		for x, c := range cols {
			o[x] = row[c]
		}
	}
	return out, nil
}

func (md *Model) runBackbone(frames []Image, v infer.View, tm *Timings) (*viewRun, error) {
	t0 := time.Now()
	w, h := frames[0].Width, frames[0].Height
	rw, rh := infer.ResizedSize(w, h, v.Scale)
	pw, ph := infer.PaddedSize(rw, rh, md.m.Input.SizeDivisor)
	per := 3 * pw * ph
	n := per * len(frames)
	// Each view gets its own tensor: ORT reads it during Run only, but the
	// backbone outputs of all views stay alive until the batch is done.
	tensor := make([]float32, n)
	run := &viewRun{view: v, prep: make([]infer.Prepared, len(frames))}
	sizes := make([]float32, 0, 2*len(frames))
	for i, f := range frames {
		mat, err := gocv.NewMatFromBytes(f.Height, f.Width, gocv.MatTypeCV8UC3, f.Pix[:f.Width*f.Height*3])
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
		p, err := infer.Preprocess(mat, f.Order, v, md.norm, pw, ph, tensor[i*per:(i+1)*per])
		mat.Close()
		if err != nil {
			return nil, fmt.Errorf("frame %d: %w", i, err)
		}
		run.prep[i] = p
		sizes = append(sizes, float32(p.Height), float32(p.Width))
	}
	img, err := ort.NewTensor(ort.NewShape(int64(len(frames)), 3, int64(ph), int64(pw)), tensor)
	if err != nil {
		return nil, fmt.Errorf("image tensor: %w", err)
	}
	defer img.Destroy()
	if run.sizes, err = ort.NewTensor(ort.NewShape(int64(len(frames)), 2), sizes); err != nil {
		return nil, fmt.Errorf("image size tensor: %w", err)
	}
	t1 := time.Now()
	tm.Preprocess += t1.Sub(t0)
	outs, err := md.b.Backbone.Run(img)
	tm.Backbone += time.Since(t1)
	if err != nil {
		run.release()
		return nil, err
	}
	run.outs = outs
	return run, nil
}

// Backbone output positions, from the contract's table (infer/graphs.yaml).
var (
	outLevels         = backboneOutputs("p%d")        // P2..P6
	outRPNCls         = backboneOutputs("rpn_cls_%d") // per level
	outRPNReg         = backboneOutputs("rpn_reg_%d")
	outSemanticFeat   = infer.OutputIndex(infer.GraphBackbone, "semantic_feat")
	outSemanticLogits = infer.OutputIndex(infer.GraphBackbone, "semantic_logits")
	// the box stage and mask heads graphs' outputs
	outStageLogits = infer.OutputIndex(infer.GraphBoxStage, "logits")
	outStageBoxes  = infer.OutputIndex(infer.GraphBoxStage, "boxes")
	outStageMasks  = infer.OutputIndex(infer.GraphMaskHeads, "stage_masks")
)

// backboneOutputs returns the positions of a per-level output, levels 2..6.
func backboneOutputs(format string) [5]int {
	var out [5]int
	for l := range out {
		out[l] = infer.OutputIndex(infer.GraphBackbone, fmt.Sprintf(format, l+2))
	}
	return out
}

// proposals decodes frame i's RPN outputs in view coordinates.
func (md *Model) proposals(run *viewRun, i int) ([]Proposal, error) {
	levels := make([]RPNLevel, 5)
	for l := 0; l < 5; l++ {
		cls, cshape, err := infer.Float32Output(run.outs[outRPNCls[l]])
		if err != nil {
			return nil, fmt.Errorf("rpn_cls_%d: %w", l+2, err)
		}
		reg, _, err := infer.Float32Output(run.outs[outRPNReg[l]])
		if err != nil {
			return nil, fmt.Errorf("rpn_reg_%d: %w", l+2, err)
		}
		a, hh, ww := int(cshape[1]), int(cshape[2]), int(cshape[3])
		per := a * hh * ww
		levels[l] = RPNLevel{Objectness: cls[i*per : (i+1)*per], Deltas: reg[4*i*per : 4*(i+1)*per], H: hh, W: ww}
	}
	p := run.prep[i]
	return Proposals(md.grids, levels, md.rpn, p.Width, p.Height)
}

// toFrame maps a box from a view's network input back to frame pixels.
func toFrame(b detection.Box, p infer.Prepared) detection.Box {
	if p.Flip {
		b = b.FlipX(float32(p.Width))
	}
	return b.Scale(float32(1/p.ScaleX), float32(1/p.ScaleY))
}

// toView maps a box in frame pixels into a view's network input.
func toView(b detection.Box, p infer.Prepared) detection.Box {
	b = b.Scale(float32(p.ScaleX), float32(p.ScaleY))
	if p.Flip {
		b = b.FlipX(float32(p.Width))
	}
	return b
}

// mergeProposals turns the proposals of all views (frame pixels) into the
// one set every view scores: with a single view, its proposals as they are;
// with several, mmdetection's merge_aug_proposals — all concatenated, NMS at
// the RPN's threshold, the best MaxProposals.
func mergeProposals(views [][]Proposal, cfg RPNConfig) []detection.Box {
	if len(views) == 1 {
		out := make([]detection.Box, len(views[0]))
		for i, p := range views[0] {
			out[i] = p.Box
		}
		return out
	}
	var boxes []detection.Box
	var scores []float32
	for _, v := range views {
		for _, p := range v {
			boxes = append(boxes, p.Box)
			scores = append(scores, p.Score)
		}
	}
	keep := NMSLimit(boxes, scores, cfg.NMSIoU, max(cfg.MaxProposals, 0))
	out := make([]detection.Box, len(keep))
	for i, k := range keep {
		out[i] = boxes[k]
	}
	return out
}

// detectBoxes scores the shared proposals in every view, merges the views
// and selects detections per frame (frame pixels).
func (md *Model) detectBoxes(runs []*viewRun, shared [][]detection.Box, w, h int, tm *Timings) ([][]detection.Detection, error) {
	t := md.m.NumStages
	c1 := len(md.m.Things) + 1
	total := 0
	for _, s := range shared {
		total += len(s)
	}
	dets := make([][]detection.Detection, len(shared))
	if total == 0 {
		return dets, nil
	}
	probs := make([]float32, total*c1)     // summed over views
	boxes := make([]detection.Box, total)  // summed over views, frame pixels
	stage := make([]float32, total*t*c1)   // per-stage softmax, summed over views
	viewProbs := make([]float32, total*c1) // one view's ensemble
	tmp := make([]float32, c1)
	for vi, run := range runs {
		rois := make([]float32, 0, 5*total)
		for i, s := range shared {
			for _, b := range s {
				vb := toView(b, run.prep[i])
				rois = append(rois, float32(i), vb.X1, vb.Y1, vb.X2, vb.Y2)
			}
		}
		logits, vboxes, err := md.runBBoxStages(run, rois, total, tm)
		if err != nil {
			return nil, err
		}
		if md.trace != nil {
			v := &md.trace.views[vi]
			v.rois, v.logits, v.boxes = rois, logits, vboxes
		}
		t1 := time.Now()
		if err := finite(logits, "stage_logits"); err != nil {
			return nil, err
		}
		md.ensemble.Scores(logits, total, t, c1, viewProbs)
		for r := range probs {
			probs[r] += viewProbs[r]
		}
		r := 0
		for i, s := range shared {
			for range s {
				last := vboxes[(r*t+t-1)*4:]
				b := detection.Box{X1: last[0], Y1: last[1], X2: last[2], Y2: last[3]}
				fb := toFrame(b, run.prep[i])
				boxes[r].X1 += fb.X1
				boxes[r].Y1 += fb.Y1
				boxes[r].X2 += fb.X2
				boxes[r].Y2 += fb.Y2
				for st := 0; st < t; st++ {
					softmax(logits[(r*t+st)*c1:(r*t+st+1)*c1], tmp)
					for k := range tmp {
						stage[(r*t+st)*c1+k] += tmp[k]
					}
				}
				r++
			}
		}
		tm.Merge += time.Since(t1)
	}
	t0 := time.Now()
	nv := float32(len(runs))
	for r := range boxes {
		boxes[r] = detection.Box{X1: boxes[r].X1 / nv, Y1: boxes[r].Y1 / nv, X2: boxes[r].X2 / nv, Y2: boxes[r].Y2 / nv}
	}
	for k := range probs {
		probs[k] /= nv
	}
	r0 := 0
	for i, s := range shared {
		n := len(s)
		d, rois := SelectDetections(boxes[r0:r0+n], probs[r0*c1:(r0+n)*c1], c1, md.det)
		for k := range d {
			roi := r0 + rois[k]
			d[k].Class = detection.ClassName(d[k].Label, md.m.Things)
			d[k].StageScores = make([]float32, t)
			for st := 0; st < t; st++ {
				d[k].StageScores[st] = stage[(roi*t+st)*c1+d[k].Label] / nv
			}
		}
		dets[i] = d
		if md.trace != nil {
			md.trace.rois = append(md.trace.rois, rois)
		}
		r0 += n
	}
	tm.Merge += time.Since(t0)
	return dets, nil
}

// maskInputs lists the mask heads graph's inputs in the contract's order:
// the backbone outputs of the same names (the features it pools), the RoIs
// and their labels.
func (md *Model) maskInputs(run *viewRun, rois, labels ort.Value) []ort.Value {
	sig := infer.SignatureOf(infer.GraphMaskHeads).Inputs
	in := make([]ort.Value, len(sig))
	for i, p := range sig {
		switch p.Name {
		case "rois":
			in[i] = rois
		case "labels":
			in[i] = labels
		default:
			in[i] = run.outs[infer.OutputIndex(infer.GraphBackbone, p.Name)]
		}
	}
	return in
}

// segment runs the mask heads of every view on the detections, averages
// stages and views, and pastes each mask into its frame.
func (md *Model) segment(runs []*viewRun, dets [][]detection.Detection, w, h int, tm *Timings) error {
	total := 0
	for _, d := range dets {
		total += len(d)
	}
	if total == 0 {
		return nil
	}
	t := md.m.NumStages
	ns := len(md.stages) // stages averaged
	size := md.m.RCNN.MaskSize
	area := size * size
	maps := make([]float32, total*len(runs)*ns*area)
	flips := make([]bool, len(runs)*ns)
	labels := make([]int64, 0, total)
	for _, d := range dets {
		for _, x := range d {
			labels = append(labels, int64(x.Label))
		}
	}
	for vi, run := range runs {
		rois := make([]float32, 0, 5*total)
		for i, d := range dets {
			for _, x := range d {
				vb := toView(x.Box, run.prep[i])
				rois = append(rois, float32(i), vb.X1, vb.Y1, vb.X2, vb.Y2)
			}
		}
		t0 := time.Now()
		probs, err := md.runMaskHeads(run, rois, labels)
		tm.MaskHeads += time.Since(t0)
		if err != nil {
			return err
		}
		if md.trace != nil {
			v := &md.trace.views[vi]
			v.maskRois, v.maskLabels, v.masks = rois, labels, probs
		}
		for k := 0; k < ns; k++ {
			flips[vi*ns+k] = run.view.Flip
		}
		// Regroup the chosen stages' maps of this view ([M][T]) into [M][view*stage] order.
		for m := 0; m < total; m++ {
			for k, st := range md.stages {
				dst := maps[(m*len(runs)*ns+vi*ns+k)*area:]
				copy(dst[:area], probs[(m*t+st)*area:(m*t+st+1)*area])
			}
		}
	}
	t0 := time.Now()
	mean := make([]float32, area)
	m := 0
	for _, d := range dets {
		for k := range d {
			MeanMasks(maps[m*len(runs)*ns*area:(m+1)*len(runs)*ns*area], size, flips, mean)
			d[k].Mask = PasteMask(mean, size, d[k].Box, w, h, md.m.RCNN.MaskThreshold)
			m++
		}
	}
	tm.Paste += time.Since(t0)
	return nil
}

func (md *Model) runMaskHeads(run *viewRun, rois []float32, labels []int64) ([]float32, error) {
	n := int64(len(labels))
	rt, err := ort.NewTensor(ort.NewShape(n, 5), rois)
	if err != nil {
		return nil, fmt.Errorf("rois tensor: %w", err)
	}
	defer rt.Destroy()
	lt, err := ort.NewTensor(ort.NewShape(n), labels)
	if err != nil {
		return nil, fmt.Errorf("labels tensor: %w", err)
	}
	defer lt.Destroy()
	outs, err := md.b.MaskHeads.Run(md.maskInputs(run, rt, lt)...)
	if err != nil {
		return nil, err
	}
	defer destroyAll(outs)
	p, _, err := infer.Float32Output(outs[outStageMasks])
	if err != nil {
		return nil, fmt.Errorf("stage_masks: %w", err)
	}
	want := int(n) * md.m.NumStages * md.m.RCNN.MaskSize * md.m.RCNN.MaskSize
	if len(p) != want {
		return nil, fmt.Errorf("mask heads returned %d values, want %d", len(p), want)
	}
	if err := finite(p, "stage_masks"); err != nil {
		return nil, err
	}
	return append([]float32(nil), p...), nil
}

// ErrNotFinite is returned when a graph emits NaN or Inf: a broken model
// must fail loudly, not draw garbage.
var ErrNotFinite = errors.New("graph output is not finite")

func finite(v []float32, name string) error {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return fmt.Errorf("%w: %s[%d] = %v", ErrNotFinite, name, i, x)
		}
	}
	return nil
}

func destroyAll(vs []ort.Value) {
	for _, v := range vs {
		if v != nil {
			v.Destroy()
		}
	}
}

// WarmUp runs the plan once on a blank frame of the bundle's test scale, so
// ONNX Runtime's first-run allocations and kernel choices do not land on
// the first real frame.
func (md *Model) WarmUp() error {
	s := md.views[0].Scale
	img := Image{Width: s.Long, Height: s.Short, Pix: make([]byte, s.Long*s.Short*3), Order: infer.RGB}
	_, _, err := md.Detect([]Image{img})
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return nil
}
