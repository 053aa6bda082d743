//go:build !(goexperiment.simd && amd64)

package cascade

// accumulateBin: without GOEXPERIMENT=simd (or off amd64) the scalar loop;
// the Makefile and scripts build with the experiment on.
func accumulateBin(dst, img []float32, c int, bt *binTaps, add bool) {
	accumulateBinScalar(dst, img, c, bt, add)
}

// RoIAlignVectorised reports whether RoIAlign runs on 8-wide vectors here:
// not in a build without GOEXPERIMENT=simd.
func RoIAlignVectorised() bool { return false }
