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

// accumulateBin sets dst (C values) to the weighted sum of the bin's
// positions of img (or adds it), 32 channels at a time in four 8-wide
// accumulators that stay in registers across the bin's samples.
func accumulateBin(dst, img []float32, c int, bt *binTaps, add bool) {
	if !useAVX2 || c%8 != 0 || len(dst) < c {
		accumulateBinScalar(dst, img, c, bt, add)
		return
	}
	// The loads below read img unchecked: check the bin's rows and columns
	// once instead of every load.
	h := len(img) / (bt.w * c)
	for _, y := range bt.ys {
		if uint(y.idx) >= uint(h) {
			panic("cascade: roi align row outside its feature map")
		}
	}
	for _, x := range bt.xs {
		if uint(x.idx) >= uint(bt.w) {
			panic("cascade: roi align column outside its feature map")
		}
	}
	base := unsafe.Pointer(unsafe.SliceData(img))
	at := func(off int) *[8]float32 { return (*[8]float32)(unsafe.Add(base, 4*off)) }
	k := 0
	for ; k+32 <= c; k += 32 {
		var a0, a1, a2, a3 archsimd.Float32x8
		if add {
			a0 = archsimd.LoadFloat32x8Slice(dst[k : k+8])
			a1 = archsimd.LoadFloat32x8Slice(dst[k+8 : k+16])
			a2 = archsimd.LoadFloat32x8Slice(dst[k+16 : k+24])
			a3 = archsimd.LoadFloat32x8Slice(dst[k+24 : k+32])
		}
		for _, y := range bt.ys {
			row := y.idx * bt.w
			// the weight's product on vectors: a scalar float multiply here
			// is a legacy-SSE instruction between AVX ones, which stalls
			wy := archsimd.BroadcastFloat32x8(y.w)
			for _, x := range bt.xs {
				w := wy.Mul(archsimd.BroadcastFloat32x8(x.w))
				o := (row+x.idx)*c + k
				a0 = archsimd.LoadFloat32x8(at(o)).MulAdd(w, a0)
				a1 = archsimd.LoadFloat32x8(at(o+8)).MulAdd(w, a1)
				a2 = archsimd.LoadFloat32x8(at(o+16)).MulAdd(w, a2)
				a3 = archsimd.LoadFloat32x8(at(o+24)).MulAdd(w, a3)
			}
		}
		a0.StoreSlice(dst[k : k+8])
		a1.StoreSlice(dst[k+8 : k+16])
		a2.StoreSlice(dst[k+16 : k+24])
		a3.StoreSlice(dst[k+24 : k+32])
	}
	for ; k < c; k += 8 {
		var a archsimd.Float32x8
		if add {
			a = archsimd.LoadFloat32x8Slice(dst[k : k+8])
		}
		for _, y := range bt.ys {
			row := y.idx * bt.w
			wy := archsimd.BroadcastFloat32x8(y.w)
			for _, x := range bt.xs {
				a = archsimd.LoadFloat32x8(at((row+x.idx)*c+k)).MulAdd(wy.Mul(archsimd.BroadcastFloat32x8(x.w)), a)
			}
		}
		a.StoreSlice(dst[k : k+8])
	}
}
