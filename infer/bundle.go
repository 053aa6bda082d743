package infer

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Contract is the bundle contract version this build reads and the
// exporter writes (docs/model-bundle.md).
const Contract = "htcstream-bundle/2"

// contractV1 is the retired contract of bundles exported before issue 14
// (one bbox_heads graph that pooled RoIs itself): named only to tell its
// users how to convert such a bundle.
const contractV1 = "htcstream-bundle/1"

// ErrBundle is wrapped by every error about a bundle's content.
var ErrBundle = errors.New("model bundle")

// Manifest is a bundle's manifest.yaml (docs/model-bundle.md).
type Manifest struct {
	Contract string   `yaml:"contract"`
	Name     string   `yaml:"name"`
	Things   []string `yaml:"things"`
	Stuff    []string `yaml:"stuff"`
	// Semantic names every semantic_logits channel; nil: the channels are
	// Things then Stuff (the layout of bundles written before it existed).
	Semantic  *SemanticLayout `yaml:"semantic"`
	NumStages int             `yaml:"num_stages"`
	Input     struct {
		Color       string    `yaml:"color"`
		Mean        []float32 `yaml:"mean"`
		Std         []float32 `yaml:"std"`
		SizeDivisor int       `yaml:"size_divisor"`
		TestScales  [][2]int  `yaml:"test_scales"`
	} `yaml:"input"`
	Anchors struct {
		Strides []int     `yaml:"strides"`
		Scales  []float64 `yaml:"scales"`
		Ratios  []float64 `yaml:"ratios"`
	} `yaml:"anchors"`
	RPN struct {
		NMSPre       int     `yaml:"nms_pre"`
		NMSIoU       float32 `yaml:"nms_iou"`
		MaxProposals int     `yaml:"max_proposals"`
		MinBoxSize   float32 `yaml:"min_box_size"`
		DeltaClip    float32 `yaml:"delta_clip"`
	} `yaml:"rpn"`
	RCNN struct {
		BoxStds        [][4]float32 `yaml:"box_stds"`
		ScoreThreshold float32      `yaml:"score_threshold"`
		NMSIoU         float32      `yaml:"nms_iou"`
		MaxPerImage    int          `yaml:"max_per_image"`
		MaskSize       int          `yaml:"mask_size"`
		MaskThreshold  float32      `yaml:"mask_threshold"`
	} `yaml:"rcnn"`
	Graphs struct {
		Backbone string `yaml:"backbone"`
		// BBoxStages are the box stages' graphs, one per stage.
		BBoxStages []string `yaml:"bbox_stages"`
		MaskHeads  string   `yaml:"mask_heads"`
	} `yaml:"graphs"`
	// Quantization says which graphs hold INT8 (QDQ) weights; nil: all
	// float (every bundle htc.export writes).
	Quantization *Quantization `yaml:"quantization"`
	// ROI says how the runtime pools the box stages' inputs.
	ROI *ROIPooling `yaml:"roi"`
}

// ROIPooling is the manifest's roi section: RoIAlign (aligned, avg) of each
// RoI on its own FPN level, and of the semantic feature.
type ROIPooling struct {
	Size          int     `yaml:"size"`
	SamplingRatio int     `yaml:"sampling_ratio"`
	FinestScale   float32 `yaml:"finest_scale"`
	Strides       []int   `yaml:"strides"`
	Channels      int     `yaml:"channels"`
	// SemanticSize > 0: semantic_feat is pooled SemanticSize x SemanticSize,
	// averaged down to Size x Size and added.
	SemanticSize   int `yaml:"semantic_size"`
	SemanticStride int `yaml:"semantic_stride"`
}

func (r *ROIPooling) validate() error {
	switch {
	case r.Size < 1 || r.Size > 64:
		return fmt.Errorf("roi.size %d", r.Size)
	case r.SamplingRatio < 0:
		return fmt.Errorf("roi.sampling_ratio %d", r.SamplingRatio)
	case r.FinestScale <= 0:
		return fmt.Errorf("roi.finest_scale %v", r.FinestScale)
	case len(r.Strides) != 4:
		return fmt.Errorf("roi.strides has %d levels, the backbone gives P2-P5 (4)", len(r.Strides))
	case r.Channels < 1:
		return fmt.Errorf("roi.channels %d", r.Channels)
	case r.SemanticSize < 0 || (r.SemanticSize > 0 && (r.SemanticSize%r.Size != 0 || r.SemanticStride < 1)):
		return fmt.Errorf("roi.semantic_size %d (stride %d): want 0 or a multiple of roi.size %d with a stride",
			r.SemanticSize, r.SemanticStride, r.Size)
	}
	for i, s := range r.Strides {
		if s < 1 {
			return fmt.Errorf("roi.strides[%d] = %d", i, s)
		}
	}
	return nil
}

// SemanticLayout is the manifest's optional semantic section: one name per
// semantic_logits channel and which channels are stuff (docs/model-bundle.md).
type SemanticLayout struct {
	// Layout tags the channel order: LayoutCOCOStuff or LayoutCustom.
	Layout string `yaml:"layout"`
	// Classes names channel i of semantic_logits.
	Classes []string `yaml:"classes"`
	// Stuff lists the stuff channels, ascending; the others are things.
	Stuff []int `yaml:"stuff"`
}

// Semantic layouts a manifest may name.
const (
	// LayoutCOCOStuff is the 183-channel head of mmdetection's HTC
	// checkpoints: channel i is COCO-stuff id i+1 (things 1-91 with COCO's
	// gaps, stuff 92-182), channel 182 is "other".
	LayoutCOCOStuff = "cocostuff"
	// LayoutCustom is any other order, described by classes and stuff alone.
	LayoutCustom = "custom"
)

// COCO-stuff layout: its channel count and its stuff channels (ids 92-182
// and "other").
const (
	COCOStuffChannels   = 183
	COCOStuffFirstStuff = 91
)

// maxSemanticChannels is what a per-pixel byte map can label.
const maxSemanticChannels = 256

// SemanticClasses returns the name of every semantic_logits channel.
func (m *Manifest) SemanticClasses() []string {
	if m.Semantic != nil {
		return append([]string(nil), m.Semantic.Classes...)
	}
	return append(append([]string(nil), m.Things...), m.Stuff...)
}

// StuffChannels returns, per semantic_logits channel, whether it is stuff.
func (m *Manifest) StuffChannels() []bool {
	if m.Semantic == nil {
		mask := make([]bool, len(m.Things)+len(m.Stuff))
		for i := len(m.Things); i < len(mask); i++ {
			mask[i] = true
		}
		return mask
	}
	mask := make([]bool, len(m.Semantic.Classes))
	for _, c := range m.Semantic.Stuff {
		mask[c] = true
	}
	return mask
}

// semanticField names where the manifest sets the channel count, for errors.
func (m *Manifest) semanticField() string {
	if m.Semantic != nil {
		return "semantic.classes"
	}
	return "things + stuff"
}

func (s *SemanticLayout) validate(hasStuff bool) error {
	n := len(s.Classes)
	switch {
	case hasStuff:
		return errors.New("stuff and semantic are both given: with semantic, the stuff channels are semantic.stuff (drop the top-level stuff list)")
	case s.Layout != LayoutCOCOStuff && s.Layout != LayoutCustom:
		return fmt.Errorf("semantic.layout %q, want %s or %s", s.Layout, LayoutCOCOStuff, LayoutCustom)
	case n == 0:
		return errors.New("semantic.classes is empty: it names every semantic_logits channel")
	case n > maxSemanticChannels:
		return fmt.Errorf("semantic.classes has %d names, at most %d channels are supported", n, maxSemanticChannels)
	case s.Layout == LayoutCOCOStuff && n != COCOStuffChannels:
		return fmt.Errorf("semantic.classes has %d names, the %s layout has %d channels (COCO-stuff ids 1-182, then other)", n, LayoutCOCOStuff, COCOStuffChannels)
	}
	for i, c := range s.Classes {
		if c == "" {
			return fmt.Errorf("semantic.classes[%d] is empty", i)
		}
	}
	for i, c := range s.Stuff {
		if c < 0 || c >= n || (i > 0 && c <= s.Stuff[i-1]) {
			return fmt.Errorf("semantic.stuff[%d] = %d: want ascending, distinct channels in 0..%d", i, c, n-1)
		}
	}
	if s.Layout == LayoutCOCOStuff {
		ok := len(s.Stuff) == COCOStuffChannels-COCOStuffFirstStuff
		for i := 0; ok && i < len(s.Stuff); i++ {
			ok = s.Stuff[i] == COCOStuffFirstStuff+i
		}
		if !ok {
			return fmt.Errorf("semantic.stuff must be channels %d-%d for the %s layout (COCO-stuff ids 92-182 and other)", COCOStuffFirstStuff, COCOStuffChannels-1, LayoutCOCOStuff)
		}
	}
	return nil
}

// Normalization returns the manifest's input normalisation.
func (m *Manifest) Normalization() Normalization {
	var n Normalization
	copy(n.Mean[:], m.Input.Mean)
	copy(n.Std[:], m.Input.Std)
	return n
}

// ReadManifest reads and validates dir/manifest.yaml; unknown keys are errors.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, "manifest.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	// The version first, leniently: a retired contract's keys are unknown
	// to the strict decode below, and its user needs the way out, not them.
	var head struct {
		Contract string `yaml:"contract"`
	}
	if err := yaml.Unmarshal(b, &head); err == nil && head.Contract != Contract {
		if head.Contract == contractV1 {
			return nil, fmt.Errorf("%w: %s: contract %s is retired (its bbox_heads graph pooled RoIs itself); "+
				"re-export it as %s with `htcstream export --from-bundle %s --config CFG --out NEW` "+
				"or from its checkpoint with `htcstream export --checkpoint CKPT`", ErrBundle, path, contractV1, Contract, dir)
		}
		return nil, fmt.Errorf("%w: %s: contract %q, this build reads %q", ErrBundle, path, head.Contract, Contract)
	}
	var m Manifest
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, path, err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, path, err)
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	switch {
	case len(m.Graphs.BBoxStages) != m.NumStages:
		return fmt.Errorf("graphs.bbox_stages names %d graphs for %d stages", len(m.Graphs.BBoxStages), m.NumStages)
	case m.ROI == nil:
		return fmt.Errorf("contract %s needs the roi section", Contract)
	}
	if err := m.ROI.validate(); err != nil {
		return err
	}
	for i, g := range m.Graphs.BBoxStages {
		if g == "" {
			return fmt.Errorf("graphs.bbox_stages[%d] is empty", i)
		}
	}
	switch {
	case len(m.Things) == 0:
		return errors.New("no thing classes")
	case m.NumStages < 1:
		return fmt.Errorf("num_stages %d", m.NumStages)
	case m.Input.Color != "RGB":
		return fmt.Errorf("input.color %q, want RGB", m.Input.Color)
	case len(m.Input.Mean) != 3 || len(m.Input.Std) != 3:
		return errors.New("input.mean and input.std need 3 values each")
	case m.Input.SizeDivisor < 1:
		return fmt.Errorf("input.size_divisor %d", m.Input.SizeDivisor)
	case len(m.Input.TestScales) == 0:
		return errors.New("input.test_scales is empty")
	case len(m.Anchors.Strides) != 5:
		return fmt.Errorf("anchors.strides has %d levels, the graphs have 5 (P2-P6)", len(m.Anchors.Strides))
	case len(m.Anchors.Scales) == 0 || len(m.Anchors.Ratios) == 0:
		return errors.New("anchors.scales and anchors.ratios must not be empty")
	case len(m.RCNN.BoxStds) != m.NumStages:
		return fmt.Errorf("rcnn.box_stds has %d rows for %d stages", len(m.RCNN.BoxStds), m.NumStages)
	case m.RCNN.MaskSize < 1:
		return fmt.Errorf("rcnn.mask_size %d", m.RCNN.MaskSize)
	case m.Graphs.Backbone == "" || m.Graphs.MaskHeads == "":
		return errors.New("graphs must name backbone and mask_heads")
	}
	if m.Semantic != nil {
		if err := m.Semantic.validate(len(m.Stuff) > 0); err != nil {
			return err
		}
	}
	if m.Quantization != nil {
		if err := m.Quantization.validate(); err != nil {
			return err
		}
	}
	for i, s := range m.Input.Std {
		if s <= 0 {
			return fmt.Errorf("input.std[%d] = %v", i, s)
		}
	}
	for _, sc := range m.Input.TestScales {
		if sc[0] <= 0 || sc[1] <= 0 {
			return fmt.Errorf("test scale %v", sc)
		}
	}
	return nil
}

// Bundle is a loaded model bundle: its manifest and one session per graph.
type Bundle struct {
	Dir        string
	Manifest   *Manifest
	Backbone   *Session
	BBoxStages []*Session // one per stage
	MaskHeads  *Session
}

// LevelNames are the FPN levels the backbone graph outputs.
var LevelNames = []string{"p2", "p3", "p4", "p5", "p6"}

// LoadBundle reads the bundle in dir, opens its graphs with o and checks
// each against the contract. The error names the file and the mismatch; a
// provider the library cannot give fails the first graph (OpenSession).
func LoadBundle(dir string, o SessionOptions) (*Bundle, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Dir: dir, Manifest: m, BBoxStages: make([]*Session, len(m.Graphs.BBoxStages))}
	type graph struct {
		file string
		dst  **Session
		kind GraphKind
	}
	graphs := []graph{{m.Graphs.Backbone, &b.Backbone, GraphBackbone}}
	for i, f := range m.Graphs.BBoxStages {
		graphs = append(graphs, graph{f, &b.BBoxStages[i], GraphBoxStage})
	}
	graphs = append(graphs, graph{m.Graphs.MaskHeads, &b.MaskHeads, GraphMaskHeads})
	for _, g := range graphs {
		path := filepath.Join(dir, g.file)
		if _, err := os.Stat(path); err != nil {
			b.Close()
			return nil, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		s, err := OpenSession(path, o)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("%w: %v", ErrBundle, err)
		}
		*g.dst = s
		o.Provider = s.Provider
		if err := checkSignature(s, SignatureOf(g.kind)); err != nil {
			b.Close()
			return nil, fmt.Errorf("%w: %s: %v", ErrBundle, path, err)
		}
	}
	if err := checkSemanticChannels(b.Backbone, m); err != nil {
		b.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, filepath.Join(dir, "manifest.yaml"), err)
	}
	if err := checkROIWidth(b, m); err != nil {
		b.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, filepath.Join(dir, "manifest.yaml"), err)
	}
	return b, nil
}

// checkROIWidth compares the roi section with the graphs, where
// they fix the sizes: the channels of p2 and semantic_feat, and each stage's
// roi_feats width (size x size x channels). A mismatch would otherwise
// surface as a shape error on the first frame.
func checkROIWidth(b *Bundle, m *Manifest) error {
	r := m.ROI
	for _, o := range b.Backbone.Outputs {
		if (o.Name == "p2" || (o.Name == "semantic_feat" && r.SemanticSize > 0)) && len(o.Dimensions) == 4 &&
			o.Dimensions[1] > 0 && int(o.Dimensions[1]) != r.Channels {
			return fmt.Errorf("roi.channels is %d but %s's %s has %d channels", r.Channels, m.Graphs.Backbone, o.Name, o.Dimensions[1])
		}
	}
	want := r.Size * r.Size * r.Channels
	for i, s := range b.BBoxStages {
		if d := s.Inputs[0].Dimensions; len(d) == 2 && d[1] > 0 && int(d[1]) != want {
			return fmt.Errorf("roi size %d and channels %d make %d values a RoI, but %s's roi_feats takes %d",
				r.Size, r.Channels, want, m.Graphs.BBoxStages[i], d[1])
		}
	}
	return nil
}

// checkSemanticChannels compares the backbone's semantic_logits channel
// count, when the graph fixes it, with the names the manifest gives.
func checkSemanticChannels(backbone *Session, m *Manifest) error {
	for _, o := range backbone.Outputs {
		if o.Name != "semantic_logits" || len(o.Dimensions) != 4 || o.Dimensions[1] <= 0 {
			continue
		}
		if want := len(m.SemanticClasses()); int(o.Dimensions[1]) != want {
			return fmt.Errorf("%s names %d semantic classes but %s's semantic_logits has %d channels",
				m.semanticField(), want, m.Graphs.Backbone, o.Dimensions[1])
		}
	}
	return nil
}

// Provider reports the execution provider the bundle's graphs run on.
func (b *Bundle) Provider() Provider { return b.Backbone.Provider }

// Close releases every session; idempotent.
func (b *Bundle) Close() {
	for _, s := range b.Sessions() {
		s.Close()
	}
}

// Sessions lists the bundle's open sessions in the order the test procedure
// runs them: backbone, the box stages, mask heads.
func (b *Bundle) Sessions() []*Session {
	var out []*Session
	for _, s := range append(append([]*Session{b.Backbone}, b.BBoxStages...), b.MaskHeads) {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}
