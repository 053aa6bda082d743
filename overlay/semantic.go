package overlay

import "fmt"

// stuffPalette colours stuff classes: muted, so instances drawn over them
// stay the eye's first stop.
var stuffPalette = [][3]uint8{
	{135, 206, 235}, {34, 139, 34}, {30, 90, 200}, {160, 82, 45}, {128, 128, 0},
	{112, 128, 144}, {218, 165, 32}, {85, 107, 47}, {70, 130, 180}, {188, 143, 143},
}

// TintStuff tints every pixel whose semantic label is a stuff channel
// (stuff[label], the bundle's per-channel stuff mask; labels past its end are
// not stuff) with that class's colour at opacity alpha, in place on a w x h
// RGB24 frame. Thing pixels are left for the instance masks. Stuff channels
// take the palette in channel order, so neighbouring stuff classes differ.
func TintStuff(frame []byte, w, h int, labels []uint8, stuff []bool, alpha float32) error {
	if len(frame) < w*h*3 || len(labels) != w*h {
		return fmt.Errorf("overlay: semantic map of %d labels for a %dx%d frame of %d bytes", len(labels), w, h, len(frame))
	}
	a := uint32(clamp01(alpha)*256 + 0.5)
	if a == 0 {
		return nil
	}
	// rank[l] is l's position among the stuff channels, -1 for things.
	var rank [256]int
	k := 0
	for l := range rank {
		rank[l] = -1
		if l < len(stuff) && stuff[l] {
			rank[l], k = k, k+1
		}
	}
	// A semantic map is long runs of one label: each stuff run is blended
	// in one go, with its class's tint, made when the class first shows up.
	var tints [256]tint
	var made [256]bool
	for i := 0; i < len(labels); {
		l := labels[i]
		n := indexNotByte(labels[i:], l)
		if r := rank[l]; r >= 0 {
			if !made[l] {
				tints[l], made[l] = newTint(stuffPalette[r%len(stuffPalette)], a), true
			}
			tints[l].blend(frame[3*i : 3*(i+n)])
		}
		i += n
	}
	return nil
}
