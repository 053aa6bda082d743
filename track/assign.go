package track

// Assignment is Hungarian (optimal), not greedy: greedy takes the single
// best pair first, and when two objects cross, the best pair of one frame
// can be the wrong one for both (A's track overlaps B's detection a little
// more), swapping their ids, where the optimal total keeps them. The cost of
// optimality stays small because the cost matrix is cut into the connected
// components of its allowed pairs first: in a real scene most components
// are one track and one detection, and the O(n^3) solver only runs on the
// few real clusters.

// big stands for a forbidden pair; finite so that the solver's arithmetic
// stays ordinary.
const big = 1e9

// pairCost is an allowed (track, detection) pair and its cost.
type pairCost struct {
	r, c int
	cost float64
}

// assigner keeps the scratch space of one Tracker's assignments between
// frames, so a frame allocates little.
type assigner struct {
	parent   []int
	sub      []float64
	u, v     []float64
	p, way   []int
	minv     []float64
	used     []bool
	rowMatch []int
}

// solve matches rows 0..nr-1 to columns 0..nc-1 among the allowed pairs,
// minimising the total cost plus limit for every row left unmatched: a pair
// is only taken when it beats leaving its row unmatched, and every allowed
// pair must cost less than limit. It returns each row's column or -1.
func (as *assigner) solve(nr, nc int, pairs []pairCost, limit float64) []int {
	rows := as.rowMatch[:0]
	for i := 0; i < nr; i++ {
		rows = append(rows, -1)
	}
	as.rowMatch = rows
	if len(pairs) == 0 {
		return rows
	}
	// Components: union-find over nodes rows 0..nr-1, columns nr..nr+nc-1.
	parent := as.parent[:0]
	for i := 0; i < nr+nc; i++ {
		parent = append(parent, i)
	}
	as.parent = parent
	find := func(x int) int {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	for _, pc := range pairs {
		a, b := find(pc.r), find(nr+pc.c)
		if a != b {
			parent[a] = b
		}
	}
	// Pairs of a component, by root; singletons (one pair) match at once.
	byRoot := make(map[int][]pairCost)
	for _, pc := range pairs {
		root := find(pc.r)
		byRoot[root] = append(byRoot[root], pc)
	}
	for _, comp := range byRoot {
		if len(comp) == 1 {
			rows[comp[0].r] = comp[0].c
			continue
		}
		as.solveComponent(comp, limit, rows)
	}
	return rows
}

// solveComponent runs the Hungarian method on one component, padded with
// one private "unmatched" column per row at cost limit so that every row
// can always be assigned and the matrix is rectangular with rows <= cols.
func (as *assigner) solveComponent(comp []pairCost, limit float64, rows []int) {
	rIdx := map[int]int{}
	cIdx := map[int]int{}
	var rOf, cOf []int
	for _, pc := range comp {
		if _, ok := rIdx[pc.r]; !ok {
			rIdx[pc.r] = len(rOf)
			rOf = append(rOf, pc.r)
		}
		if _, ok := cIdx[pc.c]; !ok {
			cIdx[pc.c] = len(cOf)
			cOf = append(cOf, pc.c)
		}
	}
	n, mReal := len(rOf), len(cOf)
	m := mReal + n
	a := growF(&as.sub, n*m)
	for i := range a {
		a[i] = big
	}
	for i := 0; i < n; i++ {
		a[i*m+mReal+i] = limit
	}
	for _, pc := range comp {
		a[rIdx[pc.r]*m+cIdx[pc.c]] = pc.cost
	}
	match := hungarian(a, n, m, as)
	for i, j := range match {
		if j < mReal {
			rows[rOf[i]] = cOf[j]
		}
	}
}

// hungarian solves the n x m (n <= m) assignment problem on the row-major
// costs a with the shortest augmenting path method (Kuhn-Munkres with
// potentials, O(n^2 m)) and returns each row's column.
func hungarian(a []float64, n, m int, as *assigner) []int {
	u := growF(&as.u, n+1)
	v := growF(&as.v, m+1)
	p := growI(&as.p, m+1)
	way := growI(&as.way, m+1)
	minv := growF(&as.minv, m+1)
	used := as.used[:0]
	for j := 0; j <= m; j++ {
		used = append(used, false)
	}
	as.used = used
	for i := range u {
		u[i] = 0
	}
	for j := 0; j <= m; j++ {
		v[j], p[j], way[j] = 0, 0, 0
	}
	// 1-based rows and columns; column 0 is the virtual start.
	for i := 1; i <= n; i++ {
		p[0] = i
		j0 := 0
		for j := 0; j <= m; j++ {
			minv[j] = 2 * big * float64(n+1)
			used[j] = false
		}
		for {
			used[j0] = true
			i0 := p[j0]
			delta := 2 * big * float64(n+1)
			j1 := 0
			row := a[(i0-1)*m:]
			for j := 1; j <= m; j++ {
				if used[j] {
					continue
				}
				cur := row[j-1] - u[i0] - v[j]
				if cur < minv[j] {
					minv[j] = cur
					way[j] = j0
				}
				if minv[j] < delta {
					delta = minv[j]
					j1 = j
				}
			}
			for j := 0; j <= m; j++ {
				if used[j] {
					u[p[j]] += delta
					v[j] -= delta
				} else {
					minv[j] -= delta
				}
			}
			j0 = j1
			if p[j0] == 0 {
				break
			}
		}
		for j0 != 0 {
			j1 := way[j0]
			p[j0] = p[j1]
			j0 = j1
		}
	}
	match := make([]int, n)
	for j := 1; j <= m; j++ {
		if p[j] != 0 {
			match[p[j]-1] = j - 1
		}
	}
	return match
}

func growF(s *[]float64, n int) []float64 {
	if cap(*s) < n {
		*s = make([]float64, n)
	}
	*s = (*s)[:n]
	return *s
}

func growI(s *[]int, n int) []int {
	if cap(*s) < n {
		*s = make([]int, n)
	}
	*s = (*s)[:n]
	return *s
}
