package overlay

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// tint blends one colour at one opacity over RGB24 pixels. Every channel
// value v becomes (v*(256-a) + c*a) >> 8, the formula the overlay has
// always used, so results are bit for bit the same as a lookup table's.
//
// Runs of pixels are blended eight at a time (24 bytes, three 64-bit words)
// with SWAR arithmetic: a word's even and odd bytes are spread into four
// 16-bit lanes each and scaled with one multiplication. No lane can carry
// into the next: v*(256-a) + c*a <= 255*256 < 1<<16. That is some thirty
// register operations for eight pixels, where a table costs 24 byte loads,
// 24 table loads and 24 byte stores.
type tint struct {
	c  [3]byte
	na uint64 // 256 - a
	// lo[j] and hi[j] hold c*a for the even and the odd bytes of word j of
	// a 24-byte block; byte k of the block is channel k%3.
	lo, hi [3]uint64
	ca     [3]uint32 // c*a per channel, for pixels left over after the blocks
}

// lanes masks the low byte of each 16-bit lane.
const lanes = 0x00ff00ff00ff00ff

func newTint(c [3]byte, a uint32) tint {
	t := tint{c: c, na: uint64(256 - a)}
	for ch := range 3 {
		t.ca[ch] = uint32(c[ch]) * a
	}
	for k := range 24 {
		j, b := k/8, k%8
		shift := 16 * uint(b/2)
		if b%2 == 0 {
			t.lo[j] |= uint64(t.ca[k%3]) << shift
		} else {
			t.hi[j] |= uint64(t.ca[k%3]) << shift
		}
	}
	return t
}

// blend blends every pixel of p, whose length is a multiple of 3.
func (t *tint) blend(p []byte) {
	na := t.na // a local stays in a register; t.na is reloaded after every store to p
	mix := func(x uint64, j int) uint64 {
		lo := (x&lanes)*na + t.lo[j]
		hi := (x>>8&lanes)*na + t.hi[j]
		return lo>>8&lanes | hi&^lanes
	}
	for len(p) >= 24 {
		binary.LittleEndian.PutUint64(p[0:8], mix(binary.LittleEndian.Uint64(p[0:8]), 0))
		binary.LittleEndian.PutUint64(p[8:16], mix(binary.LittleEndian.Uint64(p[8:16]), 1))
		binary.LittleEndian.PutUint64(p[16:24], mix(binary.LittleEndian.Uint64(p[16:24]), 2))
		p = p[24:]
	}
	for ; len(p) >= 3; p = p[3:] {
		p[0] = byte((uint32(p[0])*uint32(na) + t.ca[0]) >> 8)
		p[1] = byte((uint32(p[1])*uint32(na) + t.ca[1]) >> 8)
		p[2] = byte((uint32(p[2])*uint32(na) + t.ca[2]) >> 8)
	}
}

// fill paints every pixel of p solid.
func (t *tint) fill(p []byte) {
	for ; len(p) >= 3; p = p[3:] {
		p[0], p[1], p[2] = t.c[0], t.c[1], t.c[2]
	}
}

// indexZero returns the index of s's first zero byte, or len(s).
func indexZero(s []byte) int {
	if i := bytes.IndexByte(s, 0); i >= 0 {
		return i
	}
	return len(s)
}

// indexNotByte returns the index of the first byte of s that is not b, or
// len(s). Masks and label maps are mostly long stretches of one value, so
// it compares eight bytes at a time.
func indexNotByte(s []byte, b byte) int {
	bb := uint64(b) * 0x0101010101010101
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if v := binary.LittleEndian.Uint64(s[i:]) ^ bb; v != 0 {
			return i + bits.TrailingZeros64(v)/8
		}
	}
	for ; i < len(s); i++ {
		if s[i] != b {
			return i
		}
	}
	return len(s)
}
