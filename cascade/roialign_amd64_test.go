//go:build !purego

package cascade

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestRoIAlignDispatchPicksAssembly reads the CPU's flags from the kernel
// rather than from x/sys/cpu, which the dispatch itself uses: a CPU with
// AVX2 and FMA must get the assembly.
func TestRoIAlignDispatchPicksAssembly(t *testing.T) {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no /proc/cpuinfo to compare the dispatch with: %v", err)
	}
	var flags []string
	for _, line := range strings.Split(string(info), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "flags" {
			flags = strings.Fields(value)
			break
		}
	}
	has := slices.Contains(flags, "avx2") && slices.Contains(flags, "fma")
	if has != RoIAlignVectorised() {
		t.Fatalf("CPU has AVX2 and FMA: %v; RoIAlign on vectors: %v", has, RoIAlignVectorised())
	}
	t.Logf("AVX2 and FMA: %v; the assembly runs: %v", has, RoIAlignVectorised())
}

// TestRoIAlignAssemblyMatchesGoLoop pools the same maps and boxes with the
// assembly and with the Go loop. Channel counts cover the kernel's blocks
// (64, 32, 8 channels) alone and combined, and counts off the vector width
// (which take the Go loop on both paths); the boxes are randomBoxes' kinds
// plus the edges written out: empty, a point, the whole map, hanging over
// every side, wholly outside.
func TestRoIAlignAssemblyMatchesGoLoop(t *testing.T) {
	if !useAVX2 {
		t.Skip("this CPU lacks AVX2 or FMA: no assembly to compare")
	}
	rng := rand.New(rand.NewSource(3))
	for _, c := range []int{8, 13, 40, 64, 72, 104, 256} {
		for _, ra := range []RoIAlign{
			{Size: 7},
			{Size: 7, SamplingRatio: 2},
			{Size: 7, Average: 2, Add: true},
			{Size: 14, SamplingRatio: 1},
		} {
			t.Run(fmt.Sprintf("C%d_S%d_g%d_avg%d", c, ra.Size, ra.SamplingRatio, ra.Average), func(t *testing.T) {
				n, h, w := 2, 11+rng.Intn(20), 9+rng.Intn(30)
				nchw := make([]float32, n*c*h*w)
				for i := range nchw {
					nchw[i] = rng.Float32()*2 - 1
				}
				m, err := NHWC(nchw, n, c, h, w, 0.5)
				if err != nil {
					t.Fatal(err)
				}
				// boxes in image pixels: the map is at scale 0.5
				ih, iw := float32(2*h), float32(2*w)
				boxes := randomBoxes(rng, 120, ih, iw)
				boxes = append(boxes,
					5, 5, 5, 5, // empty
					3, 4, 3.5, 4, // zero height
					0, 0, iw, ih, // the whole map
					-iw, -ih, 2*iw, 2*ih, // over every side
					iw+4, ih+4, iw+20, ih+9, // outside
					-30, -30, -2, -3, // outside, before the origin
					iw-1, ih-1, iw+1, ih+1, // the last pixel's corner
					1, 2, 1.2, 2.1, // smaller than a bin
				)
				rois := len(boxes) / 4
				per := ra.Size * ra.Size * c
				// a guard past the last RoI's output catches a write beyond it
				const guard = 64
				base := make([]float32, rois*per+guard)
				for i := range base {
					base[i] = float32(i%5) - 2
				}
				pool := func(asm bool) []float32 {
					saved := useAVX2
					useAVX2 = asm
					defer func() { useAVX2 = saved }()
					out := slices.Clone(base)
					jobs := make([]PoolJob, rois)
					for i := range jobs {
						jobs[i] = PoolJob{Batch: i % n, Box: [4]float32(boxes[4*i : 4*i+4]), Out: out[i*per : (i+1)*per]}
					}
					if err := ra.Pool([]FeatureMap{m}, jobs, 2); err != nil {
						t.Fatal(err)
					}
					return out
				}
				goLoop, asm := pool(false), pool(true)
				if !slices.Equal(asm[rois*per:], base[rois*per:]) {
					t.Fatal("the assembly wrote past the last RoI's output")
				}
				worst, changed := 0.0, 0
				for i := range asm[:rois*per] {
					if math.IsNaN(float64(asm[i])) {
						t.Fatalf("value %d: NaN from the assembly", i)
					}
					worst = math.Max(worst, math.Abs(float64(asm[i]-goLoop[i])))
					if asm[i] != base[i] {
						changed++
					}
				}
				// sums of at most a few hundred products of values in [-1, 1]
				// with weights summing to at most 1, fused or rounded twice
				if worst > 1e-6 {
					t.Fatalf("largest difference between the assembly and the Go loop: %g", worst)
				}
				if changed < rois*per/4 {
					t.Fatalf("only %d of %d outputs written", changed, rois*per)
				}
				t.Logf("largest difference between the assembly and the Go loop: %.2g", worst)
			})
		}
	}
}
