//go:build !(goexperiment.simd && amd64)

package cascade

// accumulateRow: without GOEXPERIMENT=simd (or off amd64) the scalar loop;
// the Makefile and scripts build with the experiment on.
func accumulateRow(dst, img []float32, c int, r *binRow, add bool) {
	accumulateRowScalar(dst, img, c, r, add)
}

// RoIAlignVectorised reports whether RoIAlign runs on 8-wide vectors here:
// not in a build without GOEXPERIMENT=simd.
func RoIAlignVectorised() bool { return false }
