package overlay

import "testing"

func TestTintStuffLeavesThings(t *testing.T) {
	const w, h = 4, 1
	f := gray(w, h, 100)
	// Things 0..4, stuff from 5: pixel 0 is a thing, 1 and 2 stuff class 0,
	// 3 stuff class 1.
	if err := TintStuff(f, w, h, []uint8{2, 5, 5, 6}, 5, 0.5); err != nil {
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
	if err := TintStuff(f, w, h, []uint8{1}, 5, 0.5); err == nil {
		t.Error("a map of the wrong size must be an error")
	}
}
