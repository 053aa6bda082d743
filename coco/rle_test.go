package coco

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"slices"
	"testing"
)

// rowMajor builds a mask from rows of 0/1, the layout Encode takes.
func rowMajor(rows ...[]byte) (mask []byte, w, h int) {
	for _, r := range rows {
		mask = append(mask, r...)
	}
	return mask, len(rows[0]), len(rows)
}

func TestEncodeKnownMasks(t *testing.T) {
	cases := []struct {
		name   string
		rows   [][]byte
		counts []uint32
		str    string
	}{
		{
			// Read down the columns: col0 0 1 0, col1 1 1 0, col2 0 0 1,
			// i.e. 0 1 0 1 1 0 0 0 1 -> runs 0:1 1:1 0:1 1:2 0:3 1:1.
			// String: counts 0..2 as they are: 1,1,1 -> '1'+'1'+'1' (48+1).
			// From the fourth on, minus the count two before:
			// 2-1 = 1 -> '1'; 3-1 = 2 -> '2'; 1-2 = -1 -> low 5 bits 0x1f,
			// sign bit 0x10 set and the rest is -1 so no more -> 48+31 'O'.
			name:   "3x3",
			rows:   [][]byte{{0, 1, 0}, {1, 1, 0}, {0, 0, 1}},
			counts: []uint32{1, 1, 1, 2, 3, 1},
			str:    "11112O",
		},
		{
			// The first pixel set: the counts still start with an empty run
			// of zeros. 0,4 -> '0','4'.
			name:   "full 2x2",
			rows:   [][]byte{{1, 1}, {1, 1}},
			counts: []uint32{0, 4},
			str:    "04",
		},
		{
			// Nothing set: a single run of zeros, 6 -> '6'.
			name:   "empty 2x3",
			rows:   [][]byte{{0, 0, 0}, {0, 0, 0}},
			counts: []uint32{6},
			str:    "6",
		},
		{
			// Non-zero bytes other than 1 count as foreground.
			name:   "values 0/255",
			rows:   [][]byte{{255, 0}, {7, 0}},
			counts: []uint32{0, 2, 2},
			str:    "022",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, w, h := rowMajor(c.rows...)
			r, err := Encode(m, w, h)
			if err != nil {
				t.Fatal(err)
			}
			if r.Size != [2]int{h, w} || !slices.Equal(r.Counts, c.counts) {
				t.Fatalf("Encode = %v %v, want [%d %d] %v", r.Size, r.Counts, h, w, c.counts)
			}
			if s := r.CountsString(); s != c.str {
				t.Fatalf("CountsString = %q, want %q", s, c.str)
			}
			back, err := ParseCounts(c.str, h, w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(back.Counts, c.counts) {
				t.Fatalf("ParseCounts = %v, want %v", back.Counts, c.counts)
			}
		})
	}
}

func TestCountsStringContinuation(t *testing.T) {
	// 10x10, counts 40 20 40 (none delta-coded: only the first three).
	// 40 = 0b1_01000: low group 8, rest 1 -> more: 8|0x20 = 40 -> 'X';
	//   then 1 -> '1'.                                          "X1"
	// 20 = 0b10100: one group, but its 0x10 bit would read as a sign, so a
	//   second, zero group follows: 20|0x20 = 52 -> 'd', 0 -> '0'. "d0"
	r := RLE{Size: [2]int{10, 10}, Counts: []uint32{40, 20, 40}}
	if s := r.CountsString(); s != "X1d0X1" {
		t.Fatalf("CountsString = %q, want %q", s, "X1d0X1")
	}
	back, err := ParseCounts("X1d0X1", 10, 10)
	if err != nil || !slices.Equal(back.Counts, r.Counts) {
		t.Fatalf("ParseCounts = %v, %v", back.Counts, err)
	}
}

func TestParseCountsRejectsBadStrings(t *testing.T) {
	cases := []struct{ name, s string }{
		{"ends inside a count", "X"},    // 'X' has the more bit
		{"char below 48", "1 1"},        // ' ' is 32
		{"char above 111", "1p"},        // 'p' is 112
		{"counts do not cover", "11"},   // 2 pixels of 9
		{"negative count", "1O"},        // 1, then -1
		{"too long", "XXXXXXXX0"},       // 8 groups
		{"overflows uint32", "PPPPPP4"}, // 4<<30 = 2^32
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ParseCounts(c.s, 3, 3); !errors.Is(err, ErrBadRLE) {
				t.Fatalf("ParseCounts(%q) err = %v, want ErrBadRLE", c.s, err)
			}
		})
	}
}

// bruteBBox is the tight box of a row-major mask.
func bruteBBox(m []byte, w, h int) [4]float64 {
	xs, ys, xe, ye := w, h, -1, -1
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if m[y*w+x] != 0 {
				xs, xe = min(xs, x), max(xe, x)
				ys, ye = min(ys, y), max(ye, y)
			}
		}
	}
	if xe < 0 {
		return [4]float64{}
	}
	return [4]float64{float64(xs), float64(ys), float64(xe - xs + 1), float64(ye - ys + 1)}
}

func randomMask(rng *rand.Rand, w, h int) []byte {
	m := make([]byte, w*h)
	density := rng.Float64()
	// Blobs rather than salt: long runs exercise the multi-character counts.
	for i := range m {
		if rng.Float64() < density {
			m[i] = 1
		}
		if i > 0 && rng.Intn(4) > 0 {
			m[i] = m[i-1]
		}
	}
	return m
}

func TestRoundTripRandomMasks(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 300; n++ {
		w, h := 1+rng.Intn(40), 1+rng.Intn(40)
		m := randomMask(rng, w, h)
		r, err := Encode(m, w, h)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, m) {
			t.Fatalf("mask %d (%dx%d): decode(encode(m)) != m", n, w, h)
		}
		var area uint64
		for _, v := range m {
			area += uint64(v)
		}
		if r.Area() != area {
			t.Fatalf("mask %d: Area = %d, want %d", n, r.Area(), area)
		}
		// The wrap rule of rleToBbox makes it the tight box.
		if bb, want := r.ToBBox(), bruteBBox(m, w, h); bb != want {
			t.Fatalf("mask %d (%dx%d): ToBBox = %v, want %v", n, w, h, bb, want)
		}
		back, err := ParseCounts(r.CountsString(), h, w)
		if err != nil {
			t.Fatalf("mask %d: %v", n, err)
		}
		if !slices.Equal(back.Counts, r.Counts) {
			t.Fatalf("mask %d: string round trip %v != %v", n, back.Counts, r.Counts)
		}
		js, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON RLE
		if err := json.Unmarshal(js, &fromJSON); err != nil {
			t.Fatalf("mask %d: %s: %v", n, js, err)
		}
		if fromJSON.Size != r.Size || !slices.Equal(fromJSON.Counts, r.Counts) {
			t.Fatalf("mask %d: JSON round trip %s", n, js)
		}
	}
}

func TestToBBoxWrappingRun(t *testing.T) {
	// h=w=4, counts 2 3 11: ones at column-major 2,3,4 = (x0,y2) (x0,y3)
	// (x1,y0). The run's ends are y=2 and y=0; only the wrap rule (the run
	// moves to a later column) brings in y=3: box x 0..1, y 0..3.
	r := RLE{Size: [2]int{4, 4}, Counts: []uint32{2, 3, 11}}
	if got, want := r.ToBBox(), [4]float64{0, 0, 2, 4}; got != want {
		t.Fatalf("ToBBox = %v, want %v", got, want)
	}
}

func TestFromPolygon(t *testing.T) {
	cases := []struct {
		name   string
		xy     []float64
		h, w   int
		counts []uint32
		area   uint64
	}{
		{
			// Square 0..10 on a 20x20 image. Scaled by 5 the corners are
			// (0,0) (50,0) (50,50) (0,50). Along the top edge u = 0..50,
			// v = 0: for u stepping right xd = (u-1+.5)/5-.5 = (u-3)/5 is
			// whole for u = 3,8,...,48 -> columns 0..9, yd = (0+.5)/5-.5 =
			// -0.4 -> clamped to 0. Along the bottom edge (traced flipped)
			// xd = (u+.5)/5-.5 is whole for u = 47,...,2 -> columns 9..0,
			// yd = (50+.5)/5-.5 = 9.6 -> ceil 10. Vertical edges keep u.
			// Boundary indices x*20+0 and x*20+10 for x = 0..9, plus 400:
			// runs 0, then 19 runs of 10, then 400-190 = 210.
			// Area = 10 runs of ones * 10 = 100 = the rectangle's area.
			name:   "square 0..10",
			xy:     []float64{0, 0, 10, 0, 10, 10, 0, 10},
			h:      20,
			w:      20,
			counts: append(append([]uint32{0}, slices.Repeat([]uint32{10}, 19)...), 210),
			area:   100,
		},
		{
			// Triangle (0,0) (4,0) (0,4) on 5x5, scaled (0,0) (20,0) (0,20).
			// Top edge: columns 0..3 at y 0 (as above).
			// Hypotenuse traced flipped from (0,20) to (20,0), s = -1:
			// u = 20-d, v = d for d = 0..20. Stepping left xd = (u+.5)/5-.5
			// = (18-d)/5 is whole for d = 3,8,13,18 -> columns 3,2,1,0; yd
			// is from the upper point v = d-1: (d-1+.5)/5-.5 = (d-3)/5 ->
			// 0,1,2,3. Left edge: u = 0 throughout, nothing.
			// Indices x*5+y: 0 5 10 15 | 15 11 7 3 | 25 -> sorted
			// 0 3 5 7 10 11 15 15 25 -> differences 0 3 2 2 3 1 4 0 10.
			// The empty run (two points at 15) folds 10 into the 4: 14.
			// Runs 0 3 2 2 3 1 14: area 3+2+1 = 6 where the exact
			// triangle has 8.
			name:   "triangle",
			xy:     []float64{0, 0, 4, 0, 0, 4},
			h:      5,
			w:      5,
			counts: []uint32{0, 3, 2, 2, 3, 1, 14},
			area:   6,
		},
		{
			// Square 0.5..2.5 on 4x4, scaled (3,3)..(13,13). Top edge u =
			// 3..13, stepping right xd = (u-1+.5)/5-.5 = (u-3)/5 whole at
			// u = 8,13 -> columns 1,2; yd = (3+.5)/5-.5 = 0.2 -> ceil 1.
			// Bottom edge: columns 2,1 at yd = (13+.5)/5-.5 = 2.2 -> 3.
			// Indices 5 9 | 11 7 | 16 -> 5 7 9 11 16 -> runs 5 2 2 2 5:
			// pixels x,y in 1..2, area 4.
			name:   "square 0.5..2.5",
			xy:     []float64{0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5},
			h:      4,
			w:      4,
			counts: []uint32{5, 2, 2, 2, 5},
			area:   4,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := FromPolygon(c.xy, c.h, c.w)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Counts, c.counts) {
				t.Fatalf("counts = %v, want %v", r.Counts, c.counts)
			}
			if r.Area() != c.area {
				t.Fatalf("area = %d, want %d", r.Area(), c.area)
			}
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Triangle string: 0 3 2 -> "032"; then 2-3 = -1 'O', 3-2 = 1 '1',
	// 1-2 = -1 'O', 14-3 = 11 -> 48+11 ';'.
	r, _ := FromPolygon([]float64{0, 0, 4, 0, 0, 4}, 5, 5)
	if s := r.CountsString(); s != "032O1O;" {
		t.Fatalf("triangle string = %q, want %q", s, "032O1O;")
	}
	if bb := r.ToBBox(); bb != [4]float64{0, 0, 3, 3} {
		t.Fatalf("triangle box = %v, want [0 0 3 3]", bb)
	}
}

func TestFromPolygonBadInput(t *testing.T) {
	cases := []struct {
		name string
		xy   []float64
	}{
		{"empty", nil},
		{"odd", []float64{0, 0, 1}},
		{"NaN", []float64{0, 0, math.NaN(), 1, 2, 2}},
		{"huge", []float64{0, 0, 1e300, 1, 2, 2}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := FromPolygon(c.xy, 10, 10); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestFromPolygonsUnites(t *testing.T) {
	// Two 10x10 squares overlapping in a 5x10 strip: 100+100-50 = 150.
	r, err := FromPolygons([][]float64{
		{0, 0, 10, 0, 10, 10, 0, 10},
		{5, 0, 15, 0, 15, 10, 5, 10},
	}, 20, 20)
	if err != nil {
		t.Fatal(err)
	}
	if r.Area() != 150 {
		t.Fatalf("area = %d, want 150", r.Area())
	}
}

func TestMergeMatchesPixels(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for n := 0; n < 100; n++ {
		w, h := 1+rng.Intn(12), 1+rng.Intn(12)
		a, b := randomMask(rng, w, h), randomMask(rng, w, h)
		ra, _ := Encode(a, w, h)
		rb, _ := Encode(b, w, h)
		for _, intersect := range []bool{false, true} {
			want := make([]byte, w*h)
			for i := range want {
				if intersect {
					want[i] = a[i] & b[i]
				} else {
					want[i] = a[i] | b[i]
				}
			}
			wr, _ := Encode(want, w, h)
			got, err := Merge([]RLE{ra, rb}, intersect)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Counts, wr.Counts) {
				t.Fatalf("case %d intersect=%v: Merge = %v, want %v", n, intersect, got.Counts, wr.Counts)
			}
		}
	}
}

func TestIoU(t *testing.T) {
	// 4x4: A is columns 0-1 (runs 0 8 8), B columns 1-2 (runs 4 8 4),
	// empty is one run of 16. A∩B = column 1 = 4 px, A∪B = 12 px.
	A := RLE{Size: [2]int{4, 4}, Counts: []uint32{0, 8, 8}}
	B := RLE{Size: [2]int{4, 4}, Counts: []uint32{4, 8, 4}}
	E := RLE{Size: [2]int{4, 4}, Counts: []uint32{16}}
	cases := []struct {
		name  string
		dt    RLE
		gt    RLE
		crowd bool
		want  float64
	}{
		{"overlap", A, B, false, 4.0 / 12},
		{"overlap crowd gt: over dt area 8", A, B, true, 4.0 / 8},
		{"identical", A, A, false, 1},
		{"dt inside crowd", RLE{Size: [2]int{4, 4}, Counts: []uint32{5, 2, 9}}, A, true, 1},
		{"empty dt", E, A, false, 0},
		{"empty gt crowd", A, E, true, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := IoU([]RLE{c.dt}, []RLE{c.gt}, []bool{c.crowd})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(o[0][0]-c.want) > 1e-15 {
				t.Fatalf("IoU = %v, want %v", o[0][0], c.want)
			}
		})
	}
	// [detection][ground truth], nil iscrowd meaning none.
	o, err := IoU([]RLE{A, B}, []RLE{A, B, E}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float64{{1, 4.0 / 12, 0}, {4.0 / 12, 1, 0}}
	for d := range want {
		for g := range want[d] {
			if math.Abs(o[d][g]-want[d][g]) > 1e-15 {
				t.Fatalf("IoU[%d][%d] = %v, want %v", d, g, o[d][g], want[d][g])
			}
		}
	}
	if _, err := IoU([]RLE{A}, []RLE{{Size: [2]int{4, 5}, Counts: []uint32{20}}}, nil); !errors.Is(err, ErrBadRLE) {
		t.Fatalf("size mismatch: err = %v", err)
	}
	if _, err := IoU([]RLE{A}, []RLE{A}, []bool{true, false}); err == nil {
		t.Fatal("iscrowd length mismatch: no error")
	}
}

func TestIoUMatchesPixels(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for n := 0; n < 100; n++ {
		w, h := 1+rng.Intn(15), 1+rng.Intn(15)
		a, b := randomMask(rng, w, h), randomMask(rng, w, h)
		ra, _ := Encode(a, w, h)
		rb, _ := Encode(b, w, h)
		var inter, union, areaA float64
		for i := range a {
			inter += float64(a[i] & b[i])
			union += float64(a[i] | b[i])
			areaA += float64(a[i])
		}
		o, err := IoU([]RLE{ra}, []RLE{rb}, []bool{false})
		if err != nil {
			t.Fatal(err)
		}
		oc, _ := IoU([]RLE{ra}, []RLE{rb}, []bool{true})
		want, wantCrowd := 0.0, 0.0
		if inter > 0 {
			want, wantCrowd = inter/union, inter/areaA
		}
		if o[0][0] != want || oc[0][0] != wantCrowd {
			t.Fatalf("case %d: IoU %v crowd %v, want %v %v", n, o[0][0], oc[0][0], want, wantCrowd)
		}
	}
}

func TestBoxIoU(t *testing.T) {
	cases := []struct {
		name   string
		dt, gt [4]float64
		crowd  bool
		want   float64
	}{
		// Overlap x 5..10 by y 0..10 = 50; union 100+100-50 = 150.
		{"half shifted", [4]float64{0, 0, 10, 10}, [4]float64{5, 0, 10, 10}, false, 50.0 / 150},
		// Crowd: 50 over the detection's 100.
		{"half shifted crowd", [4]float64{0, 0, 10, 10}, [4]float64{5, 0, 10, 10}, true, 0.5},
		// A detection inside a big crowd box scores 1.
		{"inside crowd", [4]float64{20, 20, 5, 5}, [4]float64{0, 0, 100, 100}, true, 1},
		{"touching edge", [4]float64{0, 0, 10, 10}, [4]float64{10, 0, 10, 10}, false, 0},
		{"disjoint", [4]float64{0, 0, 1, 1}, [4]float64{5, 5, 1, 1}, false, 0},
		// 1.5 x 2 = 3 over 4 + 6 - 3 = 7.
		{"fractional", [4]float64{0.5, 0, 2, 2}, [4]float64{0, 0, 2, 3}, false, 3.0 / 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := BoxIoU([][4]float64{c.dt}, [][4]float64{c.gt}, []bool{c.crowd})
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(o[0][0]-c.want) > 1e-15 {
				t.Fatalf("BoxIoU = %v, want %v", o[0][0], c.want)
			}
		})
	}
}

func TestRLEJSON(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    RLE
		wantErr bool
	}{
		{"compressed", `{"size":[3,3],"counts":"11112O"}`, RLE{[2]int{3, 3}, []uint32{1, 1, 1, 2, 3, 1}}, false},
		{"uncompressed", `{"size":[3,3],"counts":[1,1,1,2,3,1]}`, RLE{[2]int{3, 3}, []uint32{1, 1, 1, 2, 3, 1}}, false},
		{"uncompressed short", `{"size":[3,3],"counts":[1,1]}`, RLE{}, true},
		{"negative count", `{"size":[3,3],"counts":[10,-1]}`, RLE{}, true},
		{"no counts", `{"size":[3,3]}`, RLE{}, true},
		{"bad size", `{"size":[3],"counts":"9"}`, RLE{}, true},
		{"bad string", `{"size":[3,3],"counts":"X"}`, RLE{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r RLE
			err := json.Unmarshal([]byte(c.in), &r)
			if c.wantErr {
				if err == nil {
					t.Fatalf("no error, got %v", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Size != c.want.Size || !slices.Equal(r.Counts, c.want.Counts) {
				t.Fatalf("got %v, want %v", r, c.want)
			}
			out, _ := json.Marshal(r)
			if string(out) != `{"size":[3,3],"counts":"11112O"}` {
				t.Fatalf("Marshal = %s", out)
			}
		})
	}
}

func TestSegmentationJSON(t *testing.T) {
	var s Segmentation
	if err := json.Unmarshal([]byte(`[[0,0,10,0,10,10,0,10]]`), &s); err != nil {
		t.Fatal(err)
	}
	r, err := s.ToRLE(20, 20)
	if err != nil || r.Area() != 100 {
		t.Fatalf("polygon segmentation: area %d, err %v", r.Area(), err)
	}
	if err := json.Unmarshal([]byte(`{"size":[3,3],"counts":"11112O"}`), &s); err != nil || s.RLE == nil || s.Polygons != nil {
		t.Fatalf("RLE segmentation: %+v, %v", s, err)
	}
	for _, bad := range []string{`"x"`, `[1,2,3]`, `{"size":[2,2],"counts":"0"}`} {
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Fatalf("%s: no error", bad)
		}
	}
}
