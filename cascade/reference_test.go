package cascade

import (
	"encoding/json"
	"math"
	"os/exec"
	"slices"
	"testing"

	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/internal/pyenv"
)

// torchReference runs a Python script with Debian's PyTorch and decodes the
// JSON it prints: the reference implementations the Go code must match.
func torchReference(t *testing.T, script string, out any) {
	t.Helper()
	b, err := exec.Command(pyenv.Interpreter, "-c", script).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("reference script: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("reference script: %v", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("reference output: %v", err)
	}
}

func boxesFrom(v [][4]float32) []detection.Box {
	out := make([]detection.Box, len(v))
	for i, b := range v {
		out[i] = detection.Box{X1: b[0], Y1: b[1], X2: b[2], Y2: b[3]}
	}
	return out
}

func TestNMSMatchesTorchvision(t *testing.T) {
	var ref struct {
		Boxes  [][4]float32
		Scores []float32
		Keep   []int
		Groups []int
		KeepB  []int `json:"keep_batched"`
	}
	torchReference(t, `
import json, torch, torchvision
g = torch.Generator().manual_seed(3)
xy = torch.rand(300, 2, generator=g) * 200
wh = torch.rand(300, 2, generator=g) * 60 + 1
boxes = torch.cat([xy, xy + wh], 1)
scores = torch.rand(300, generator=g)
groups = torch.randint(0, 4, (300,), generator=g)
keep = torchvision.ops.nms(boxes, scores, 0.5)
keepb = torchvision.ops.batched_nms(boxes, scores, groups, 0.5)
print(json.dumps({"boxes": boxes.tolist(), "scores": scores.tolist(), "keep": keep.tolist(),
                  "groups": groups.tolist(), "keep_batched": keepb.tolist()}))
`, &ref)
	boxes := boxesFrom(ref.Boxes)
	if got := NMS(boxes, ref.Scores, 0.5); !slices.Equal(got, ref.Keep) {
		t.Fatalf("NMS kept %v\ntorchvision kept %v", got, ref.Keep)
	}
	for _, limit := range []int{1, 17, len(ref.Keep), len(ref.Keep) + 5} {
		want := ref.Keep[:min(limit, len(ref.Keep))]
		if got := NMSLimit(boxes, ref.Scores, 0.5, limit); !slices.Equal(got, want) {
			t.Fatalf("NMSLimit %d kept %v\ntorchvision's first %d: %v", limit, got, limit, want)
		}
	}
	if got := BatchedNMS(boxes, ref.Scores, ref.Groups, 0.5); !slices.Equal(got, ref.KeepB) {
		t.Fatalf("BatchedNMS kept %v\ntorchvision kept %v", got, ref.KeepB)
	}
}

// TestPasteMatchesGridSample pastes random 28x28 maps into a frame and
// compares with mmdetection's _do_paste_mask written out in PyTorch
// (grid_sample, align_corners=False, zero padding, threshold 0.5).
func TestPasteMatchesGridSample(t *testing.T) {
	var ref struct {
		Probs [][]float32
		Boxes [][4]float32
		Masks [][]byte
		W, H  int
	}
	torchReference(t, `
import json, torch, torch.nn.functional as F
g = torch.Generator().manual_seed(5)
W, H = 97, 61
probs = torch.rand(6, 28, 28, generator=g)
probs[0] = 0.7
boxes = torch.tensor([[10.3, 5.7, 40.2, 30.9], [0.0, 0.0, 97.0, 61.0], [-5.0, -3.0, 12.5, 8.25],
                      [80.6, 50.1, 130.0, 90.0], [33.3, 20.0, 34.1, 20.6], [5.5, 40.0, 60.25, 59.5]])
masks = []
for p, b in zip(probs, boxes):
    x0, y0, x1, y1 = b.tolist()
    x0i = max(int(torch.floor(b[0]).item()) - 1, 0); y0i = max(int(torch.floor(b[1]).item()) - 1, 0)
    x1i = min(int(torch.ceil(b[2]).item()) + 1, W); y1i = min(int(torch.ceil(b[3]).item()) + 1, H)
    img_y = torch.arange(y0i, y1i, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0i, x1i, dtype=torch.float32) + 0.5
    img_y = (img_y - b[1]) / (b[3] - b[1]) * 2 - 1
    img_x = (img_x - b[0]) / (b[2] - b[0]) * 2 - 1
    gx = img_x[None, :].expand(img_y.size(0), img_x.size(0))
    gy = img_y[:, None].expand(img_y.size(0), img_x.size(0))
    grid = torch.stack([gx, gy], dim=2)[None]
    s = F.grid_sample(p[None, None], grid, align_corners=False)[0, 0]
    full = torch.zeros(H, W, dtype=torch.uint8)
    full[y0i:y1i, x0i:x1i] = (s >= 0.5).to(torch.uint8)
    masks.append(full.flatten().tolist())
print(json.dumps({"probs": [p.flatten().tolist() for p in probs], "boxes": boxes.tolist(), "masks": masks, "w": W, "h": H}))
`, &ref)
	for i, b := range boxesFrom(ref.Boxes) {
		m := PasteMask(ref.Probs[i], 28, b, ref.W, ref.H, 0.5)
		diff := 0
		for p := range ref.Masks[i] {
			in := m.At(p%ref.W, p/ref.W)
			if in != (ref.Masks[i][p] == 1) {
				diff++
			}
		}
		// Bilinear sums in float32 may land on the other side of 0.5 for
		// a pixel whose value is within rounding of it; nothing more.
		if diff > 1 {
			t.Errorf("box %d: %d pixels differ from grid_sample", i, diff)
		}
	}
}

func TestDecodeMatchesMMDetectionFormula(t *testing.T) {
	c := DeltaCoder{Stds: [4]float32{0.1, 0.1, 0.2, 0.2}, Clip: DefaultDeltaClip}
	b := detection.Box{X1: 10, Y1: 20, X2: 50, Y2: 100} // centre (30, 60), size 40 x 80
	got := c.Decode(b, [4]float32{1, -0.5, 0.5, 100})
	// dx = 0.1 -> cx 34; dy = -0.05 -> cy 56; dw = 0.1 -> w 40e^0.1;
	// dh = 20 clamped to 4.135 -> h 80*1000/16 = 5000.
	w := 40 * math.Exp(0.1)
	want := detection.Box{X1: float32(34 - w/2), Y1: 56 - 2500, X2: float32(34 + w/2), Y2: 56 + 2500}
	for k, v := range [4]float32{got.X1 - want.X1, got.Y1 - want.Y1, got.X2 - want.X2, got.Y2 - want.Y2} {
		if math.Abs(float64(v)) > 1e-3 {
			t.Fatalf("coordinate %d: got %+v, want %+v", k, got, want)
		}
	}
}

func TestAnchorsFollowMMDetection(t *testing.T) {
	cfg := AnchorConfig{Strides: []int{4, 8}, Scales: []float64{8}, Ratios: []float64{0.5, 1, 2}}
	g := NewAnchorGrids(cfg)
	a := g.Level(0, 2, 3)
	if len(a) != 2*3*3 {
		t.Fatalf("%d anchors", len(a))
	}
	// Ratio 0.5 at the origin: h = 32*sqrt(.5) = 22.627, w = 32/sqrt(.5) = 45.255.
	r := float32(math.Sqrt(0.5))
	want0 := detection.Box{X1: -16 / r, Y1: -16 * r, X2: 16 / r, Y2: 16 * r}
	if d := math.Abs(float64(a[0].X1 - want0.X1)); d > 1e-4 || math.Abs(float64(a[0].Y1-want0.Y1)) > 1e-4 {
		t.Fatalf("first anchor %+v, want %+v", a[0], want0)
	}
	// Ratio 1 at row 1, column 2: shifted by (8, 4), size 32.
	if got := a[(1*3+2)*3+1]; got != (detection.Box{X1: 8 - 16, Y1: 4 - 16, X2: 8 + 16, Y2: 4 + 16}) {
		t.Fatalf("anchor at (1,2) ratio 1: %+v", got)
	}
	if b := g.Level(1, 1, 1)[1]; b != (detection.Box{X1: -32, Y1: -32, X2: 32, Y2: 32}) {
		t.Fatalf("stride 8 square anchor %+v", b)
	}
}
