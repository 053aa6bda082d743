//go:build !purego

package cascade

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

//go:generate go run -C _asm . -out ../roialign_amd64.s -stubs ../roialign_stub_amd64.go -pkg cascade

// useAVX2 is checked once: the assembly kernel needs AVX2 and FMA (and an
// OS that saves the YMM registers, which cpu checks too).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// The kernel reads axisWeight as 16 bytes, idx at 0 and w at 8 (the
// generator's weightSize, idxOffset, wOffset): these fail to compile if
// the struct changes.
var (
	_ [16 - unsafe.Sizeof(axisWeight{})]struct{}
	_ [unsafe.Sizeof(axisWeight{}) - 16]struct{}
	_ [8 - unsafe.Offsetof(axisWeight{}.w)]struct{}
	_ [unsafe.Offsetof(axisWeight{}.w) - 8]struct{}
)

// accumulateRow sets each bin of dst (len(xat)-1 bins of C values) to the
// weighted sum of its positions of img, or adds it: in assembly when the
// CPU has AVX2 and C is whole vectors, else the scalar loop.
func accumulateRow(dst, img []float32, c int, r *binRow, add bool) {
	bins := len(r.xat) - 1
	if !useAVX2 || c <= 0 || c%8 != 0 || r.w <= 0 || bins < 0 || len(dst) < bins*c {
		accumulateRowScalar(dst, img, c, r, add)
		return
	}
	// The kernel reads img, xs and dst unchecked: check the row's map
	// rows, its columns and the bins' column ranges once instead of every
	// load.
	h := len(img) / (r.w * c)
	for _, y := range r.ys {
		if uint(y.idx) >= uint(h) {
			panic("cascade: roi align row outside its feature map")
		}
	}
	lo := 0
	for _, at := range r.xat {
		if at < lo || at > len(r.xs) {
			panic("cascade: roi align bin columns out of order")
		}
		lo = at
	}
	for _, x := range r.xs[:r.xat[bins]] {
		if uint(x.idx) >= uint(r.w) {
			panic("cascade: roi align column outside its feature map")
		}
	}
	accumulateRowAVX2(dst, img, c, r.w, r.ys, r.xs, r.xat, add)
}
