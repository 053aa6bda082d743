//go:build goexperiment.simd && amd64

package cascade

import (
	"simd/archsimd"
	"unsafe"
)

// useAVX2 is checked once: the vector path needs AVX2 and FMA.
var useAVX2 = archsimd.X86.AVX2() && archsimd.X86.FMA()

// RoIAlignVectorised reports whether RoIAlign runs on 8-wide vectors here.
func RoIAlignVectorised() bool { return useAVX2 }

// accumulateRow sets each bin of dst (len(xat)-1 bins of C values) to the
// weighted sum of its positions of img (or adds it), 32 channels at a time
// in four 8-wide accumulators that stay in registers across the bin's
// samples.
func accumulateRow(dst, img []float32, c int, r *binRow, add bool) {
	bins := len(r.xat) - 1
	if !useAVX2 || c%8 != 0 || len(dst) < bins*c || r.xat[bins] > len(r.xs) {
		accumulateRowScalar(dst, img, c, r, add)
		return
	}
	// The loads below read img unchecked: check the row's map rows and
	// columns once instead of every load.
	h := len(img) / (r.w * c)
	for _, y := range r.ys {
		if uint(y.idx) >= uint(h) {
			panic("cascade: roi align row outside its feature map")
		}
	}
	for _, x := range r.xs[:r.xat[bins]] {
		if uint(x.idx) >= uint(r.w) {
			panic("cascade: roi align column outside its feature map")
		}
	}
	base := unsafe.Pointer(unsafe.SliceData(img))
	at := func(off int) *[8]float32 { return (*[8]float32)(unsafe.Add(base, 4*off)) }
	for q := 0; q < bins; q++ {
		xs := r.xs[r.xat[q]:r.xat[q+1]]
		d := dst[q*c : (q+1)*c]
		k := 0
		for ; k+32 <= c; k += 32 {
			var a0, a1, a2, a3 archsimd.Float32x8
			if add {
				a0 = archsimd.LoadFloat32x8Slice(d[k : k+8])
				a1 = archsimd.LoadFloat32x8Slice(d[k+8 : k+16])
				a2 = archsimd.LoadFloat32x8Slice(d[k+16 : k+24])
				a3 = archsimd.LoadFloat32x8Slice(d[k+24 : k+32])
			}
			for _, y := range r.ys {
				row := y.idx * r.w
				// the weight's product on vectors: a scalar float multiply
				// here is a legacy-SSE instruction between AVX ones, which
				// stalls
				wy := archsimd.BroadcastFloat32x8(y.w)
				for _, x := range xs {
					w := wy.Mul(archsimd.BroadcastFloat32x8(x.w))
					o := (row+x.idx)*c + k
					a0 = archsimd.LoadFloat32x8(at(o)).MulAdd(w, a0)
					a1 = archsimd.LoadFloat32x8(at(o+8)).MulAdd(w, a1)
					a2 = archsimd.LoadFloat32x8(at(o+16)).MulAdd(w, a2)
					a3 = archsimd.LoadFloat32x8(at(o+24)).MulAdd(w, a3)
				}
			}
			a0.StoreSlice(d[k : k+8])
			a1.StoreSlice(d[k+8 : k+16])
			a2.StoreSlice(d[k+16 : k+24])
			a3.StoreSlice(d[k+24 : k+32])
		}
		for ; k < c; k += 8 {
			var a archsimd.Float32x8
			if add {
				a = archsimd.LoadFloat32x8Slice(d[k : k+8])
			}
			for _, y := range r.ys {
				row := y.idx * r.w
				wy := archsimd.BroadcastFloat32x8(y.w)
				for _, x := range xs {
					a = archsimd.LoadFloat32x8(at((row+x.idx)*c+k)).MulAdd(wy.Mul(archsimd.BroadcastFloat32x8(x.w)), a)
				}
			}
			a.StoreSlice(d[k : k+8])
		}
	}
}
