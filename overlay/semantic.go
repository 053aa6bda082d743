package overlay

import "fmt"

// stuffPalette colours stuff classes: muted, so instances drawn over them
// stay the eye's first stop.
var stuffPalette = [][3]uint8{
	{135, 206, 235}, {34, 139, 34}, {30, 90, 200}, {160, 82, 45}, {128, 128, 0},
	{112, 128, 144}, {218, 165, 32}, {85, 107, 47}, {70, 130, 180}, {188, 143, 143},
}

// TintStuff tints every pixel whose semantic label is a stuff class
// (label >= firstStuff) with that class's colour at opacity alpha, in place
// on a w x h RGB24 frame. Thing pixels are left for the instance masks.
func TintStuff(frame []byte, w, h int, labels []uint8, firstStuff int, alpha float32) error {
	if len(frame) < w*h*3 || len(labels) != w*h {
		return fmt.Errorf("overlay: semantic map of %d labels for a %dx%d frame of %d bytes", len(labels), w, h, len(frame))
	}
	a := uint32(clamp01(alpha)*256 + 0.5)
	if a == 0 {
		return nil
	}
	na := 256 - a
	var lut [256][3][256]byte
	var built [256]bool
	for i, l := range labels {
		k := int(l) - firstStuff
		if k < 0 {
			continue
		}
		if !built[l] {
			c := stuffPalette[k%len(stuffPalette)]
			for ch := 0; ch < 3; ch++ {
				ca := uint32(c[ch]) * a
				for v := 0; v < 256; v++ {
					lut[l][ch][v] = byte((uint32(v)*na + ca) >> 8)
				}
			}
			built[l] = true
		}
		p := frame[3*i : 3*i+3]
		p[0], p[1], p[2] = lut[l][0][p[0]], lut[l][1][p[1]], lut[l][2][p[2]]
	}
	return nil
}
