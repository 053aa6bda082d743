package detection

import "testing"

func TestClassName(t *testing.T) {
	names := []string{"person", "car"}
	for label, want := range map[int]string{0: "person", 1: "car", 2: "class 2", -1: "class -1"} {
		if got := ClassName(label, names); got != want {
			t.Errorf("ClassName(%d) = %q, want %q", label, got, want)
		}
	}
}

func TestMaskRegion(t *testing.T) {
	m := Mask{X: 10, Y: 20, W: 3, H: 2, Bits: []byte{0, 1, 1, 1, 0, 0}}
	if m.Area() != 3 || m.Empty() || (&Mask{}).Empty() == false {
		t.Fatalf("area %d, empty %v", m.Area(), m.Empty())
	}
	for _, c := range []struct {
		x, y int
		in   bool
	}{{11, 20, true}, {10, 21, true}, {10, 20, false}, {9, 20, false}, {13, 20, false}, {11, 22, false}} {
		if m.At(c.x, c.y) != c.in {
			t.Errorf("At(%d, %d) = %v", c.x, c.y, !c.in)
		}
	}
}

func TestBox(t *testing.T) {
	b := Box{X1: 1, Y1: 2, X2: 5, Y2: 10}
	if b.XYXY() != [4]float32{1, 2, 5, 10} || b.Area() != 32 || (Box{X1: 5, X2: 1, Y2: 3}).Area() != 0 {
		t.Fatalf("%v area %v", b.XYXY(), b.Area())
	}
	if got := IoU(b, Box{X1: 3, Y1: 2, X2: 7, Y2: 10}); got != 16.0/48 {
		t.Errorf("IoU %v", got)
	}
	if got := b.Clip(4, 8); got != (Box{X1: 1, Y1: 2, X2: 4, Y2: 8}) {
		t.Errorf("Clip %v", got)
	}
	if got := b.FlipX(20); got != (Box{X1: 15, Y1: 2, X2: 19, Y2: 10}) {
		t.Errorf("FlipX %v", got)
	}
}
