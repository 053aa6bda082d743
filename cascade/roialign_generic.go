//go:build !amd64 || purego

package cascade

// useAVX2 stays false: off amd64, or with the purego tag, there is no
// assembly, only the scalar loop.
var useAVX2 = false

func accumulateRow(dst, img []float32, c int, r *binRow, add bool) {
	accumulateRowScalar(dst, img, c, r, add)
}
