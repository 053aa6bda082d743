package overlay

import (
	"bytes"
	"math/rand"
	"testing"
)

func TestTintStuffLeavesThings(t *testing.T) {
	const w, h = 4, 1
	f := gray(w, h, 100)
	// Things 0..4, stuff from 5: pixel 0 is a thing, 1 and 2 stuff class 0,
	// 3 stuff class 1.
	if err := TintStuff(f, w, h, []uint8{2, 5, 5, 6}, stuffFrom(5), 0.5); err != nil {
		t.Fatal(err)
	}
	if px(f, w, 0, 0) != [3]byte{100, 100, 100} {
		t.Errorf("thing pixel tinted: %v", px(f, w, 0, 0))
	}
	// (100 + 135) / 2 etc. for stuff class 0's sky blue.
	if got := px(f, w, 1, 0); got != [3]byte{117, 153, 167} || px(f, w, 2, 0) != got {
		t.Errorf("stuff pixel %v", got)
	}
	if px(f, w, 3, 0) == px(f, w, 1, 0) {
		t.Error("two stuff classes share a colour")
	}
	if err := TintStuff(f, w, h, []uint8{1}, stuffFrom(5), 0.5); err == nil {
		t.Error("a map of the wrong size must be an error")
	}
}

// stuffFrom is the stuff mask of the old things-then-stuff layout: every
// channel from first on is stuff.
func stuffFrom(first int) []bool {
	mask := make([]bool, 256)
	for i := max(first, 0); i < len(mask); i++ {
		mask[i] = true
	}
	return mask
}

// TestTintStuffFollowsTheChannelMask: in the COCO-stuff layout (183
// channels) thing channels have gaps and stuff starts at channel 91; only
// channels the mask calls stuff are tinted, whatever their number.
func TestTintStuffFollowsTheChannelMask(t *testing.T) {
	mask := make([]bool, 183)
	for c := 91; c < 183; c++ {
		mask[c] = true
	}
	// person (0), hair brush (90, a thing id without a detection class),
	// banner (91), sky-other (156), other (182), and 200 (past the mask).
	labels := []uint8{0, 90, 91, 156, 182, 200}
	const w, h = 6, 1
	f := gray(w, h, 100)
	if err := TintStuff(f, w, h, labels, mask, 0.5); err != nil {
		t.Fatal(err)
	}
	for _, x := range []int{0, 1, 5} {
		if px(f, w, x, 0) != [3]byte{100, 100, 100} {
			t.Errorf("label %d is not stuff but was tinted: %v", labels[x], px(f, w, x, 0))
		}
	}
	// banner is the first stuff channel: the palette's first colour.
	if got := px(f, w, 2, 0); got != [3]byte{117, 153, 167} {
		t.Errorf("banner pixel %v", got)
	}
	for _, x := range []int{3, 4} {
		if px(f, w, x, 0) == [3]byte{100, 100, 100} {
			t.Errorf("stuff label %d not tinted", labels[x])
		}
	}
	// The old "everything from len(things) = 80 on is stuff" rule would
	// have tinted hair brush (90): the mask decides, not a first label.
	g := gray(w, h, 100)
	if err := TintStuff(g, w, h, labels, stuffFrom(80), 0.5); err != nil {
		t.Fatal(err)
	}
	if px(g, w, 1, 0) == [3]byte{100, 100, 100} {
		t.Error("stuffFrom(80) should tint channel 90; the test does not tell the two rules apart")
	}
}

// refTintStuff is TintStuff pixel by pixel, for comparison.
func refTintStuff(frame []byte, w, h int, labels []uint8, stuff []bool, alpha float32) {
	a := uint32(clamp01(alpha)*256 + 0.5)
	for i, l := range labels {
		if int(l) >= len(stuff) || !stuff[l] {
			continue
		}
		k := 0 // l's rank among the stuff channels
		for c := 0; c < int(l); c++ {
			if stuff[c] {
				k++
			}
		}
		c := stuffPalette[k%len(stuffPalette)]
		for ch := range 3 {
			frame[3*i+ch] = byte((uint32(frame[3*i+ch])*(256-a) + uint32(c[ch])*a) >> 8)
		}
	}
}

// semanticMap is a street-like scene: sky, buildings, road (stuff from
// class 5), things (classes 0-4) as blobs over them, ragged borders.
func semanticMap(rng *rand.Rand, w, h int) []uint8 {
	labels := make([]uint8, w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			wobble := rng.Intn(7)
			switch {
			case y < h/3+wobble:
				labels[y*w+x] = 5
			case y < 2*h/3+wobble:
				labels[y*w+x] = uint8(6 + (5*x/w)%3)
			default:
				labels[y*w+x] = 9
			}
		}
	}
	for range 40 {
		cx, cy, r, l := rng.Intn(w), rng.Intn(h), 1+rng.Intn(1+h/8), uint8(rng.Intn(5))
		for y := max(cy-r, 0); y < min(cy+r, h); y++ {
			for x := max(cx-r, 0); x < min(cx+r, w); x++ {
				if (x-cx)*(x-cx)+(y-cy)*(y-cy) <= r*r {
					labels[y*w+x] = l
				}
			}
		}
	}
	return labels
}

func TestTintStuffMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for iter := range 300 {
		w, h := 1+rng.Intn(90), 1+rng.Intn(40)
		var labels []uint8
		if iter%2 == 0 {
			labels = semanticMap(rng, w, h)
		} else { // noise, and labels of every value
			labels = make([]uint8, w*h)
			for i := range labels {
				labels[i] = uint8(rng.Intn(256) >> rng.Intn(8))
			}
		}
		stuff := stuffFrom(rng.Intn(12) - 1)
		if iter%3 == 1 { // any mask, of any length
			stuff = make([]bool, rng.Intn(260))
			for c := range stuff {
				stuff[c] = rng.Intn(3) == 0
			}
		}
		alpha := rng.Float32()*1.2 - 0.1
		want := randomFrame(rng, w, h)
		got := bytes.Clone(want)
		refTintStuff(want, w, h, labels, stuff, alpha)
		if err := TintStuff(got, w, h, labels, stuff, alpha); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("iteration %d: %s", iter, firstDiff(got, want, w))
		}
	}
}

func BenchmarkTintStuff1080p(b *testing.B) {
	const w, h = 1920, 1080
	labels := semanticMap(rand.New(rand.NewSource(1)), w, h)
	f := gray(w, h, 90)
	for b.Loop() {
		if err := TintStuff(f, w, h, labels, stuffFrom(5), 0.4); err != nil {
			b.Fatal(err)
		}
	}
}
