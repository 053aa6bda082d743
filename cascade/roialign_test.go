package cascade

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/htcstream/htcstream/infer"
)

// ortRoIAlign runs ONNX Runtime's RoiAlign (testdata/roialign{7,14}.onnx:
// avg, half_pixel, adaptive sampling, spatial_scale 1) on an NCHW map with
// boxes already scaled to it, and returns [R][C][S][S].
type ortRoIAlign struct{ s *infer.Session }

func openORTRoIAlign(tb testing.TB, size, threads int) ortRoIAlign {
	tb.Helper()
	s, err := infer.OpenSession(fmt.Sprintf("testdata/roialign%d.onnx", size), infer.SessionOptions{IntraOpThreads: threads})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return ortRoIAlign{s}
}

func (o ortRoIAlign) run(tb testing.TB, nchw []float32, n, c, h, w int, boxes []float32, batch []int64) []float32 {
	tb.Helper()
	x, err := ort.NewTensor(ort.NewShape(int64(n), int64(c), int64(h), int64(w)), nchw)
	if err != nil {
		tb.Fatal(err)
	}
	defer x.Destroy()
	r, err := ort.NewTensor(ort.NewShape(int64(len(batch)), 4), boxes)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Destroy()
	b, err := ort.NewTensor(ort.NewShape(int64(len(batch))), batch)
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Destroy()
	outs, err := o.s.Run(x, r, b)
	if err != nil {
		tb.Fatal(err)
	}
	defer destroyAll(outs)
	y, _, err := infer.Float32Output(outs[0])
	if err != nil {
		tb.Fatal(err)
	}
	return append([]float32(nil), y...)
}

// randomBoxes draws RoIs of every kind RoIAlign meets: proposals of all
// sizes, boxes hanging over or lying outside the map, thin and empty ones.
func randomBoxes(rng *rand.Rand, n int, h, w float32) []float32 {
	out := make([]float32, 0, 4*n)
	for i := 0; i < n; i++ {
		var x1, y1, bw, bh float32
		switch i % 6 {
		case 0: // far outside
			x1, y1 = -3*w+rng.Float32()*5*w, -3*h+rng.Float32()*5*h
			bw, bh = rng.Float32()*w, rng.Float32()*h
		case 1: // empty or thin
			x1, y1 = rng.Float32()*w, rng.Float32()*h
			bw, bh = float32(rng.Intn(2))*rng.Float32()*0.5, rng.Float32()*h/2
		case 2: // over an edge
			x1, y1 = w-rng.Float32()*w/3, -rng.Float32()*h/4
			bw, bh = rng.Float32()*w/2, rng.Float32()*h/2
		default: // inside, the usual proposal
			x1, y1 = rng.Float32()*w*0.9, rng.Float32()*h*0.9
			bw, bh = 1+rng.Float32()*w/2, 1+rng.Float32()*h/2
		}
		out = append(out, x1, y1, x1+bw, y1+bh)
	}
	return out
}

// forEachRoIAlignPath runs f once per kernel this build and CPU have: the
// scalar loop, and the assembly where useAVX2 picked it.
func forEachRoIAlignPath(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	paths := []bool{false}
	if useAVX2 {
		paths = append(paths, true)
	}
	for _, asm := range paths {
		name := "go"
		if asm {
			name = "asm"
		}
		t.Run(name, func(t *testing.T) {
			saved := useAVX2
			useAVX2 = asm
			defer func() { useAVX2 = saved }()
			f(t)
		})
	}
}

func TestRoIAlignMatchesONNXRuntime(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, tc := range []struct{ n, c, h, w, size int }{
		{2, 64, 23, 37, 7},  // C a multiple of 32
		{1, 40, 16, 9, 7},   // C with an 8-wide tail
		{1, 13, 12, 20, 14}, // C off the vector width: scalar path
		{2, 256, 10, 14, 14},
	} {
		t.Run(fmt.Sprintf("%dx%dx%dx%d_S%d", tc.n, tc.c, tc.h, tc.w, tc.size), func(t *testing.T) {
			nchw := make([]float32, tc.n*tc.c*tc.h*tc.w)
			for i := range nchw {
				nchw[i] = rng.Float32()*2 - 1
			}
			const rois = 300
			boxes := randomBoxes(rng, rois, float32(tc.h), float32(tc.w))
			batch := make([]int64, rois)
			for i := range batch {
				batch[i] = int64(rng.Intn(tc.n))
			}
			want := openORTRoIAlign(t, tc.size, 1).run(t, nchw, tc.n, tc.c, tc.h, tc.w, boxes, batch)

			m, err := NHWC(nchw, tc.n, tc.c, tc.h, tc.w, 1)
			if err != nil {
				t.Fatal(err)
			}
			forEachRoIAlignPath(t, func(t *testing.T) {
				s, c := tc.size, tc.c
				got := make([]float32, rois*s*s*c)
				jobs := make([]PoolJob, rois)
				for i := range jobs {
					jobs[i] = PoolJob{Batch: int(batch[i]), Box: [4]float32(boxes[4*i : 4*i+4]), Out: got[i*s*s*c : (i+1)*s*s*c]}
				}
				if err := (RoIAlign{Size: s}).Pool([]FeatureMap{m}, jobs, 2); err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for r := 0; r < rois; r++ {
					for ch := 0; ch < c; ch++ {
						for b := 0; b < s*s; b++ {
							g := got[(r*s*s+b)*c+ch]
							w := want[(r*c+ch)*s*s+b]
							worst = math.Max(worst, math.Abs(float64(g-w)))
						}
					}
				}
				if worst > 2e-6 {
					t.Fatalf("largest difference from ONNX Runtime's RoiAlign: %g", worst)
				}
				t.Logf("largest difference from ONNX Runtime's RoiAlign: %.2g", worst)
				if s%2 != 0 {
					return
				}
				// Average 2 with Add: half the bins, each the mean of a 2x2 block
				// of ONNX Runtime's, added to what Out held
				h := s / 2
				base := make([]float32, rois*h*h*c)
				for i := range base {
					base[i] = float32(i%7) - 3
				}
				got = append([]float32(nil), base...)
				for i := range jobs {
					jobs[i].Out = got[i*h*h*c : (i+1)*h*h*c]
				}
				if err := (RoIAlign{Size: h, Average: 2, Add: true}).Pool([]FeatureMap{m}, jobs, 2); err != nil {
					t.Fatal(err)
				}
				worst = 0
				for r := 0; r < rois; r++ {
					for ch := 0; ch < c; ch++ {
						for y := 0; y < h; y++ {
							for x := 0; x < h; x++ {
								at := func(yy, xx int) float32 { return want[((r*c+ch)*s+yy)*s+xx] }
								w := (at(2*y, 2*x) + at(2*y, 2*x+1) + at(2*y+1, 2*x) + at(2*y+1, 2*x+1)) / 4
								i := ((r*h+y)*h+x)*c + ch
								worst = math.Max(worst, math.Abs(float64(got[i]-base[i]-w)))
							}
						}
					}
				}
				if worst > 2e-6 {
					t.Fatalf("Average 2, Add: largest difference from ONNX Runtime's RoiAlign + 2x2 mean: %g", worst)
				}
				t.Logf("Average 2, Add: largest difference from ONNX Runtime's RoiAlign + 2x2 mean: %.2g", worst)
			})
		})
	}
}

// BenchmarkRoIAlign pools the default model's load, one box-head stage's
// P2 share: 460 proposals of ~36 px on a 64-channel 80x64 map (a 320x240
// frame), 7x7 bins; ONNX Runtime's kernel and this one, same threads.
func BenchmarkRoIAlign(b *testing.B) {
	rng := rand.New(rand.NewSource(2))
	for _, shape := range []struct {
		name          string
		c, h, w, rois int
		side          float32 // typical RoI side on the map
	}{
		{"tiny_P2", 64, 64, 80, 460, 9},
		{"r50_P2", 256, 200, 336, 900, 12},
	} {
		nchw := make([]float32, shape.c*shape.h*shape.w)
		for i := range nchw {
			nchw[i] = rng.Float32()
		}
		boxes := make([]float32, 0, 4*shape.rois)
		for i := 0; i < shape.rois; i++ {
			s := shape.side * (0.5 + rng.Float32())
			x, y := rng.Float32()*(float32(shape.w)-s), rng.Float32()*(float32(shape.h)-s)
			boxes = append(boxes, x, y, x+s, y+s*(0.7+0.6*rng.Float32()))
		}
		batch := make([]int64, shape.rois)
		b.Run(shape.name+"/onnxruntime", func(b *testing.B) {
			o := openORTRoIAlign(b, 7, 2)
			for i := 0; i < b.N; i++ {
				o.run(b, nchw, 1, shape.c, shape.h, shape.w, boxes, batch)
			}
		})
		b.Run(shape.name+"/go", func(b *testing.B) {
			m, _ := NHWC(nchw, 1, shape.c, shape.h, shape.w, 1)
			out := make([]float32, shape.rois*49*shape.c)
			jobs := make([]PoolJob, shape.rois)
			for i := 0; i < b.N; i++ {
				for r := range jobs {
					jobs[r] = PoolJob{Box: [4]float32(boxes[4*r : 4*r+4]), Out: out[r*49*shape.c : (r+1)*49*shape.c]}
				}
				if err := (RoIAlign{Size: 7}).Pool([]FeatureMap{m}, jobs, 2); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestRoIAlignRefusesBoxesItCannotSample(t *testing.T) {
	m, err := NHWC(make([]float32, 8*4*4), 1, 8, 4, 4, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, 7*7*8)
	for _, b := range [][4]float32{
		{0, 0, float32(math.NaN()), 4},
		{0, float32(math.Inf(1)), 4, 4},
		{-1e9, 0, 1e9, 4},
	} {
		err := (RoIAlign{Size: 7}).Pool([]FeatureMap{m}, []PoolJob{{Box: b, Out: out}}, 1)
		if err == nil || !strings.Contains(err.Error(), "roi 0: box") {
			t.Errorf("box %v: %v, want an error naming roi 0", b, err)
		}
	}
}

func TestNHWCTransposes(t *testing.T) {
	// sizes off the copy block, two images
	n, c, h, w := 2, 5, 7, 11
	data := make([]float32, n*c*h*w)
	for i := range data {
		data[i] = float32(i)
	}
	m, err := NHWC(data, n, c, h, w, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < n; b++ {
		for ch := 0; ch < c; ch++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					want := data[((b*c+ch)*h+y)*w+x]
					if got := m.Data[((b*h+y)*w+x)*c+ch]; got != want {
						t.Fatalf("image %d channel %d at (%d, %d): %v, want %v", b, ch, y, x, got, want)
					}
				}
			}
		}
	}
	if _, err := NHWC(data[1:], n, c, h, w, 1); err == nil {
		t.Fatal("a short tensor was accepted")
	}
}

func BenchmarkNHWC(b *testing.B) {
	// the default model's P2 at a 416x416 TTA view
	data := make([]float32, 64*104*104)
	out := make([]float32, len(data))
	for i := 0; i < b.N; i++ {
		if _, err := NHWCInto(out, data, 1, 64, 104, 104, 0.25); err != nil {
			b.Fatal(err)
		}
	}
}
