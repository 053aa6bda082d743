package track

import (
	"math"
	"math/rand"
	"testing"
)

// bruteForce returns the least total cost of solve's objective (allowed
// pairs taken plus limit per unmatched row) by trying every assignment.
func bruteForce(nr, nc int, cost map[[2]int]float64, limit float64) float64 {
	best := math.Inf(1)
	usedC := make([]bool, nc)
	var rec func(r int, total float64)
	rec = func(r int, total float64) {
		if r == nr {
			best = math.Min(best, total)
			return
		}
		rec(r+1, total+limit)
		for c := 0; c < nc; c++ {
			if v, ok := cost[[2]int{r, c}]; ok && !usedC[c] {
				usedC[c] = true
				rec(r+1, total+v)
				usedC[c] = false
			}
		}
	}
	rec(0, 0)
	return best
}

func TestAssignmentIsOptimal(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	var as assigner
	const limit = 0.8
	for trial := 0; trial < 2000; trial++ {
		nr, nc := 1+rng.Intn(6), 1+rng.Intn(6)
		var pairs []pairCost
		cost := map[[2]int]float64{}
		for r := 0; r < nr; r++ {
			for c := 0; c < nc; c++ {
				if rng.Float64() < 0.5 {
					v := rng.Float64() * limit
					pairs = append(pairs, pairCost{r, c, v})
					cost[[2]int{r, c}] = v
				}
			}
		}
		rows := as.solve(nr, nc, pairs, limit)
		total := 0.0
		seen := map[int]bool{}
		for r, c := range rows {
			if c < 0 {
				total += limit
				continue
			}
			v, ok := cost[[2]int{r, c}]
			if !ok || seen[c] {
				t.Fatalf("trial %d: row %d took column %d (allowed %v, taken before %v)", trial, r, c, ok, seen[c])
			}
			seen[c] = true
			total += v
		}
		if want := bruteForce(nr, nc, cost, limit); math.Abs(total-want) > 1e-9 {
			t.Fatalf("trial %d (%dx%d): total %v, optimum %v", trial, nr, nc, total, want)
		}
	}
}
