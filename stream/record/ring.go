package record

import (
	"fmt"
	"sync"
	"time"

	"github.com/asticode/go-astiav"
)

// Ring keeps the last Keep of a camera's packets in memory (a
// decode.PacketTap), so that an event's clip can be cut when the camera is
// not recorded: what a recording would hold for the last minute, without
// the disk. It always starts at a keyframe.
type Ring struct {
	keep     time.Duration
	maxBytes int

	mu    sync.Mutex
	par   *astiav.CodecParameters
	tb    astiav.Rational
	pkts  []ringPacket
	bytes int
}

type ringPacket struct {
	p  *astiav.Packet
	at time.Time // arrival: the wall clock the events use too
}

// NewRing keeps keep of video, at most maxBytes of it (0: 64 MiB).
func NewRing(keep time.Duration, maxBytes int) *Ring {
	if maxBytes <= 0 {
		maxBytes = 64 << 20
	}
	return &Ring{keep: keep, maxBytes: maxBytes}
}

// Begin implements decode.PacketTap: a new session's packets replace the
// old ones (their codec may differ).
func (r *Ring) Begin(par *astiav.CodecParameters, tb astiav.Rational) {
	cp := astiav.AllocCodecParameters()
	if err := par.Copy(cp); err != nil {
		cp.Free()
		cp = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
	r.par, r.tb = cp, tb
}

// Packet implements decode.PacketTap: it keeps a reference to pkt's data
// and drops whole keyframe intervals from the front beyond Keep.
func (r *Ring) Packet(pkt *astiav.Packet) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.par == nil || (len(r.pkts) == 0 && !pkt.Flags().Has(astiav.PacketFlagKey)) {
		return
	}
	c := pkt.Clone()
	if c == nil {
		return
	}
	r.pkts = append(r.pkts, ringPacket{c, now})
	r.bytes += c.Size()
	for {
		// the second keyframe: everything before it can go when it is
		// itself old enough, or when the ring is over its size
		k := -1
		for i := 1; i < len(r.pkts); i++ {
			if r.pkts[i].p.Flags().Has(astiav.PacketFlagKey) {
				k = i
				break
			}
		}
		if k < 0 || (now.Sub(r.pkts[k].at) < r.keep && r.bytes <= r.maxBytes) {
			return
		}
		for _, rp := range r.pkts[:k] {
			r.bytes -= rp.p.Size()
			rp.p.Free()
		}
		r.pkts = append(r.pkts[:0], r.pkts[k:]...)
	}
}

// End implements decode.PacketTap; what was kept stays until the next
// session begins.
func (r *Ring) End() {}

// Close frees what the ring holds. The ring must get no packets after it.
func (r *Ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clear()
}

func (r *Ring) clear() {
	for _, rp := range r.pkts {
		rp.p.Free()
	}
	r.pkts, r.bytes = nil, 0
	if r.par != nil {
		r.par.Free()
		r.par = nil
	}
}

// Clip writes the kept packets between from and to (wall clock) into an
// MP4 at out, as CutClip does from recordings: from the keyframe at or
// before from, copied, not re-encoded.
func (r *Ring) Clip(from, to time.Time, out string) (time.Duration, error) {
	r.mu.Lock()
	if r.par == nil || len(r.pkts) == 0 || r.pkts[0].at.After(to) {
		r.mu.Unlock()
		return 0, fmt.Errorf("clip %s: %w (the memory ring holds the last %v)", out, ErrNoFootage, r.keep)
	}
	// references, so the writer works outside the lock while packets go on
	// arriving
	par := astiav.AllocCodecParameters()
	if err := r.par.Copy(par); err != nil {
		r.mu.Unlock()
		par.Free()
		return 0, err
	}
	tb := r.tb
	pkts := make([]ringPacket, 0, len(r.pkts))
	for _, rp := range r.pkts {
		if c := rp.p.Clone(); c != nil {
			pkts = append(pkts, ringPacket{c, rp.at})
		}
	}
	r.mu.Unlock()
	defer func() {
		par.Free()
		for _, rp := range pkts {
			rp.p.Free()
		}
	}()

	c := &clipWriter{path: out, from: from, to: to, lastDTS: -1, segFirst: true}
	defer c.free()
	if err := c.open(par); err != nil {
		c.abort()
		return 0, err
	}
	for _, rp := range pkts {
		if err := c.take(rp.p, tb, rp.at); err != nil {
			c.abort()
			return 0, err
		}
		if c.done {
			break
		}
	}
	return c.finish() // ErrNoFootage when nothing was in the window
}
