package cascade

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// FeatureMap is one feature level of a batch, channels last ([N][H][W][C]):
// RoIAlign then reads a sample's four neighbours as four contiguous rows of C
// values, which SIMD adds in whole vectors. ONNX Runtime's RoiAlign reads the
// graphs' NCHW maps one plane per channel instead, with scalar arithmetic:
// that kernel was three quarters of the box heads' time (docs/benchmarks.md).
type FeatureMap struct {
	N, H, W, C int
	Data       []float32
	// Scale maps image pixels onto this map (1 / stride).
	Scale float32
}

// NHWC copies an NCHW tensor into a new FeatureMap.
func NHWC(data []float32, n, c, h, w int, scale float32) (FeatureMap, error) {
	return NHWCInto(make([]float32, len(data)), data, n, c, h, w, scale)
}

// NHWCInto is NHWC writing into out (len(data) values).
func NHWCInto(out, data []float32, n, c, h, w int, scale float32) (FeatureMap, error) {
	if len(data) != n*c*h*w || len(out) != len(data) {
		return FeatureMap{}, fmt.Errorf("feature map: %d values (into %d) for %dx%dx%dx%d", len(data), len(out), n, c, h, w)
	}
	plane := h * w
	// In blocks of pixels: a block's C x block outputs stay in cache while
	// every channel writes into them (channel by channel over whole planes,
	// each write landed on another cache line: ~5 ns a value).
	const block = 32
	for b := 0; b < n; b++ {
		src := data[b*c*plane : (b+1)*c*plane]
		dst := out[b*c*plane : (b+1)*c*plane]
		for p0 := 0; p0 < plane; p0 += block {
			p1 := min(p0+block, plane)
			d := dst[p0*c : p1*c]
			for ch := 0; ch < c; ch++ {
				for i, v := range src[ch*plane+p0 : ch*plane+p1] {
					d[i*c+ch] = v
				}
			}
		}
	}
	return FeatureMap{N: n, H: h, W: w, C: c, Data: out, Scale: scale}, nil
}

// maxBoxCoord bounds the box coordinates Pool accepts (pixels): 16 times
// the largest test scale infer.ParseScale takes.
const maxBoxCoord = 65536.0

// PoolJob is one RoI to pool: box (x1, y1, x2, y2) in image pixels on image
// Batch of map Level, written to Out ([S][S][C]: bin-major, channels last).
type PoolJob struct {
	Level, Batch int
	Box          [4]float32
	Out          []float32
}

// RoIAlign is RoIAlign as torchvision and ONNX Runtime compute it with
// aligned=True (half-pixel) and mode avg: Size x Size bins, each the mean of
// a grid of bilinear samples, SamplingRatio per side, or ceil(extent/Size)
// when 0 (adaptive). A sample outside [-1, H] x [-1, W] counts as zero.
type RoIAlign struct {
	Size, SamplingRatio int
	// Average > 1 pools Size*Average bins and averages each Average x
	// Average block down to one of Size x Size (HTC's box branch takes the
	// semantic feature that way: 14x14, then a 2x2 average), in one pass.
	Average int
	// Add adds the pooled values to Out instead of overwriting it.
	Add bool
}

// axisWeight is one map row (or column) and its weight in an output bin.
type axisWeight struct {
	idx int
	w   float32
}

// axisWeights lays out one axis of the bilinear sampling. Bilinear weights
// and the mean over a bin's g x g grid both factor by axis, so bin (p, q) is
// the sum over rows r and columns k of wy(p, r) * wx(q, k) * map[r][k].
// Output bin p's weights are dst[at[p]:at[p+1]], one entry per distinct row:
// the g samples (times sub sub-bins) of a bin share rows, so merging them
// leaves ~g+1 rows instead of 2g. A sample outside [-1, limit] adds nothing
// (it still counts in the mean, as in the reference). Coordinates are
// float32 in the reference's order of operations.
func axisWeights(start, binSize float32, size, sub, g, limit int, dst []axisWeight, at []int) ([]axisWeight, []int) {
	dst, at = dst[:0], append(at[:0], 0)
	lim := float32(limit)
	inv := 1 / float32(g*sub)
	bins := size * sub
	add := func(first, idx int, w float32) []axisWeight {
		if w == 0 {
			return dst
		}
		for k := first; k < len(dst); k++ {
			if dst[k].idx == idx {
				dst[k].w += w
				return dst
			}
		}
		return append(dst, axisWeight{idx, w})
	}
	for p := 0; p < bins; p++ {
		if p%sub == 0 && p > 0 {
			at = append(at, len(dst))
		}
		first := at[len(at)-1]
		for i := 0; i < g; i++ {
			y := start + float32(p)*binSize + float32(float32(i)+0.5)*binSize/float32(g)
			if y < -1 || y > lim {
				continue
			}
			if y <= 0 {
				y = 0
			}
			lo := int(y)
			hi := lo + 1
			if lo >= limit-1 {
				lo, hi = limit-1, limit-1
				y = float32(lo)
			}
			l := y - float32(lo)
			dst = add(first, lo, (1-l)*inv)
			dst = add(first, hi, l*inv)
		}
	}
	return dst, append(at, len(dst))
}

// poolScratch is one worker's reusable buffers.
type poolScratch struct {
	ys, xs   []axisWeight
	yat, xat []int
}

// binRow is one row of output bins' sampling: rows ys of one image's map
// (w positions a row, C values each) and, for bin q of the row, columns
// xs[xat[q]:xat[q+1]]. axisWeights keeps every index inside the map.
type binRow struct {
	w      int
	ys, xs []axisWeight
	xat    []int
}

// pool writes job j's bins.
func (ra RoIAlign) pool(m *FeatureMap, j *PoolJob, s *poolScratch) {
	size, c, sub := ra.Size, m.C, max(ra.Average, 1)
	bins := size * sub
	sc := m.Scale
	x1, y1 := j.Box[0]*sc-0.5, j.Box[1]*sc-0.5
	x2, y2 := j.Box[2]*sc-0.5, j.Box[3]*sc-0.5
	rw, rh := x2-x1, y2-y1
	bw, bh := rw/float32(bins), rh/float32(bins)
	gh, gw := ra.SamplingRatio, ra.SamplingRatio
	if gh <= 0 {
		gh = int(math.Ceil(float64(rh / float32(bins))))
		gw = int(math.Ceil(float64(rw / float32(bins))))
	}
	out := j.Out[:size*size*c]
	if gh <= 0 || gw <= 0 {
		// an empty box takes no samples: the reference divides a zero sum
		if !ra.Add {
			clear(out)
		}
		return
	}
	s.ys, s.yat = axisWeights(y1, bh, size, sub, gh, m.H, s.ys, s.yat)
	s.xs, s.xat = axisWeights(x1, bw, size, sub, gw, m.W, s.xs, s.xat)
	// the image's whole map, so the kernels may index it without checks
	img := m.Data[j.Batch*m.H*m.W*c : (j.Batch+1)*m.H*m.W*c]
	for p := 0; p < size; p++ {
		row := binRow{w: m.W, ys: s.ys[s.yat[p]:s.yat[p+1]], xs: s.xs, xat: s.xat}
		accumulateRow(out[p*size*c:(p+1)*size*c], img, c, &row, ra.Add)
	}
}

// RoIAlignVectorised reports whether RoIAlign runs on 8-wide vectors here:
// the amd64 assembly on a CPU with AVX2 and FMA.
func RoIAlignVectorised() bool { return useAVX2 }

// accumulateRowScalar sets each bin of dst (len(xat)-1 bins of C values)
// to the weighted sum of its positions of img, or adds the sum to it.
func accumulateRowScalar(dst, img []float32, c int, r *binRow, add bool) {
	if !add {
		clear(dst)
	}
	for q := 0; q+1 < len(r.xat); q++ {
		d := dst[q*c : (q+1)*c]
		for _, y := range r.ys {
			for _, x := range r.xs[r.xat[q]:r.xat[q+1]] {
				w := y.w * x.w
				o := (y.idx*r.w + x.idx) * c
				row := img[o : o+c]
				for k, v := range row {
					d[k] += w * v
				}
			}
		}
	}
}

// Pool runs every job on maps (indexed by Level) with up to workers
// goroutines. Jobs cost about the same, so each worker takes a contiguous
// share.
func (ra RoIAlign) Pool(maps []FeatureMap, jobs []PoolJob, workers int) error {
	for i := range jobs {
		j := &jobs[i]
		if j.Level < 0 || j.Level >= len(maps) {
			return fmt.Errorf("roi %d: level %d of %d", i, j.Level, len(maps))
		}
		m := &maps[j.Level]
		if j.Batch < 0 || j.Batch >= m.N {
			return fmt.Errorf("roi %d: image %d of %d", i, j.Batch, m.N)
		}
		if len(j.Out) < ra.Size*ra.Size*m.C {
			return fmt.Errorf("roi %d: output of %d values, want %d", i, len(j.Out), ra.Size*ra.Size*m.C)
		}
		for _, v := range j.Box {
			// a box beyond the largest map would ask for a sampling grid
			// without bound; the graphs clip boxes to the image, so only a
			// broken model gets here
			if !(math.Abs(float64(v)) <= maxBoxCoord) {
				return fmt.Errorf("roi %d: box %v is not finite or beyond %g px", i, j.Box, maxBoxCoord)
			}
		}
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, len(jobs)/8))
	run := func(part []PoolJob) {
		var s poolScratch
		for i := range part {
			ra.pool(&maps[part[i].Level], &part[i], &s)
		}
	}
	if workers == 1 {
		run(jobs)
		return nil
	}
	var wg sync.WaitGroup
	per := (len(jobs) + workers - 1) / workers
	for lo := 0; lo < len(jobs); lo += per {
		part := jobs[lo:min(lo+per, len(jobs))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(part)
		}()
	}
	wg.Wait()
	return nil
}
