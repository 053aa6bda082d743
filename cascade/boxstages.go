package cascade

import (
	"fmt"
	"math"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/infer"
)

// The box cascade: Go pools every RoI on its own FPN level (and the
// semantic feature) with RoIAlign, channels last, and each stage's graph
// holds only the stage's FC layers and box decoding. Stage t+1 pools stage
// t's boxes. The stages' outputs are gathered per RoI ([R,T,...]) for the
// ensemble and the merge.

// poolingMaps returns the view's P2-P5 (and semantic feature, last) channels
// last, in md's scratch buffer: valid until the next call.
func (md *Model) poolingMaps(run *viewRun) ([]FeatureMap, error) {
	roi := md.m.ROI
	idx := append([]int(nil), outLevels[:len(roi.Strides)]...)
	strides := append([]int(nil), roi.Strides...)
	if roi.SemanticSize > 0 {
		idx = append(idx, outSemanticFeat)
		strides = append(strides, roi.SemanticStride)
	}
	datas := make([][]float32, len(idx))
	shapes := make([][]int64, len(idx))
	total := 0
	for i, o := range idx {
		data, shape, err := infer.Float32Output(run.outs[o])
		if err != nil {
			return nil, fmt.Errorf("backbone output %d: %w", o, err)
		}
		if len(shape) != 4 || int(shape[1]) != roi.Channels {
			return nil, fmt.Errorf("backbone output %d has shape %v; the manifest's roi.channels is %d", o, shape, roi.Channels)
		}
		datas[i], shapes[i] = data, shape
		total += len(data)
	}
	if cap(md.nhwc) < total {
		md.nhwc = make([]float32, total)
	}
	buf := md.nhwc[:total]
	maps := make([]FeatureMap, len(idx))
	for i, sh := range shapes {
		var err error
		n := len(datas[i])
		maps[i], err = NHWCInto(buf[:n], datas[i], int(sh[0]), int(sh[1]), int(sh[2]), int(sh[3]), 1/float32(strides[i]))
		if err != nil {
			return nil, err
		}
		buf = buf[n:]
	}
	return maps, nil
}

// roiLevel is the FPN level (0 = P2) a box is pooled from, as mmdetection
// maps RoIs: floor(log2(sqrt(w h) / finest + 1e-6)), clamped; in float32
// like the reference.
func roiLevel(b [4]float32, finest float32, levels int) int {
	scale := float32(math.Sqrt(float64((b[2] - b[0]) * (b[3] - b[1]))))
	l := math.Floor(float64(float32(math.Log2(float64(scale/finest + 1e-6)))))
	if !(l > 0) { // NaN (an inverted box) too
		return 0
	}
	return min(int(l), levels-1)
}

// boxPool pools a view's RoIs for one stage.
type boxPool struct {
	fpn, sem RoIAlign
	maps     []FeatureMap
	jobs     []PoolJob
	feats    []float32 // [R][S][S][C]
}

func (md *Model) newBoxPool(run *viewRun, n int) (*boxPool, error) {
	maps, err := md.poolingMaps(run)
	if err != nil {
		return nil, err
	}
	roi := md.m.ROI
	s := roi.Size
	// The features (6 MB for 500 RoIs of the default model) are reused from
	// frame to frame: every value is written before it is read.
	if need := n * s * s * roi.Channels; cap(md.roiFeats) < need {
		md.roiFeats = make([]float32, need)
	}
	p := &boxPool{
		fpn:   RoIAlign{Size: s, SamplingRatio: roi.SamplingRatio},
		maps:  maps,
		jobs:  make([]PoolJob, n),
		feats: md.roiFeats[:n*s*s*roi.Channels],
	}
	if roi.SemanticSize > 0 {
		p.sem = RoIAlign{Size: s, SamplingRatio: roi.SamplingRatio, Average: roi.SemanticSize / s, Add: true}
	}
	return p, nil
}

// pool fills feats for rois ([R,5]: image, x1, y1, x2, y2).
func (p *boxPool) pool(md *Model, rois []float32) error {
	roi := md.m.ROI
	per := roi.Size * roi.Size * roi.Channels
	for r := range p.jobs {
		b := [4]float32(rois[5*r+1 : 5*r+5])
		p.jobs[r] = PoolJob{Level: roiLevel(b, roi.FinestScale, len(roi.Strides)), Batch: int(rois[5*r]), Box: b,
			Out: p.feats[r*per : (r+1)*per]}
	}
	if err := p.fpn.Pool(p.maps, p.jobs, 0); err != nil {
		return err
	}
	if p.sem.Size == 0 {
		return nil
	}
	for r := range p.jobs {
		p.jobs[r].Level = len(p.maps) - 1
	}
	return p.sem.Pool(p.maps, p.jobs, 0)
}

// runBBoxStages runs the box cascade on one view's RoIs and returns every
// stage's logits [R,T,C+1] and boxes [R,T,4].
func (md *Model) runBBoxStages(run *viewRun, rois []float32, n int, tm *Timings) (logits, boxes []float32, err error) {
	t, c1 := md.m.NumStages, len(md.m.Things)+1
	pool, err := md.newBoxPool(run, n)
	if err != nil {
		return nil, nil, err
	}
	cur := append([]float32(nil), rois...)
	logits = make([]float32, n*t*c1)
	boxes = make([]float32, n*t*4)
	for st := 0; st < t; st++ {
		t0 := time.Now()
		if err := pool.pool(md, cur); err != nil {
			return nil, nil, fmt.Errorf("stage %d roi pooling: %w", st+1, err)
		}
		t1 := time.Now()
		tm.RoIAlign += t1.Sub(t0)
		err := md.runBBoxStage(st, pool.feats, cur, n, run.sizes, logits, boxes)
		tm.BBoxHeads += time.Since(t1)
		if err != nil {
			return nil, nil, err
		}
	}
	return logits, boxes, nil
}

// runBBoxStage runs stage st's graph on rois ([R,5]) and writes its outputs
// straight from the graph's tensors: row r's logits and box into stage st of
// logits [R,T,C+1] and boxes [R,T,4], and the box into rois, the next
// stage's RoIs.
func (md *Model) runBBoxStage(st int, feats, rois []float32, n int, sizes *ort.Tensor[float32], logits, boxes []float32) error {
	ft, err := ort.NewTensor(ort.NewShape(int64(n), int64(len(feats)/n)), feats)
	if err != nil {
		return fmt.Errorf("roi_feats tensor: %w", err)
	}
	defer ft.Destroy()
	rt, err := ort.NewTensor(ort.NewShape(int64(n), 5), rois)
	if err != nil {
		return fmt.Errorf("rois tensor: %w", err)
	}
	defer rt.Destroy()
	outs, err := md.b.BBoxStages[st].Run(ft, rt, sizes)
	if err != nil {
		return err
	}
	defer destroyAll(outs)
	l, _, err := infer.Float32Output(outs[outStageLogits])
	if err != nil {
		return fmt.Errorf("stage %d logits: %w", st+1, err)
	}
	b, _, err := infer.Float32Output(outs[outStageBoxes])
	if err != nil {
		return fmt.Errorf("stage %d boxes: %w", st+1, err)
	}
	t, c1 := md.m.NumStages, len(md.m.Things)+1
	if len(l) != n*c1 || len(b) != n*4 {
		return fmt.Errorf("box stage %d returned %d logits and %d box values for %d RoIs, %d classes",
			st+1, len(l), len(b), n, c1)
	}
	for r := 0; r < n; r++ {
		copy(logits[(r*t+st)*c1:(r*t+st+1)*c1], l[r*c1:(r+1)*c1])
		copy(boxes[(r*t+st)*4:(r*t+st+1)*4], b[r*4:(r+1)*4])
		copy(rois[5*r+1:5*r+5], b[r*4:(r+1)*4])
	}
	return nil
}
