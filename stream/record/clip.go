package record

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/asticode/go-astiav"
)

// segmentStart reads a segment's start from its name (segmentName).
func segmentStart(camera, name string) (time.Time, bool) {
	if !segmentPattern(camera).MatchString(name) {
		return time.Time{}, false
	}
	s := strings.TrimSuffix(strings.TrimPrefix(name, camera+"-"), ".mp4")
	t, err := time.Parse("20060102T150405.000Z", s)
	return t, err == nil
}

// ErrNoFootage: the recordings do not cover the clip's window.
var ErrNoFootage = errors.New("no recording covers the clip")

// CutClip copies the camera's recorded packets between from and to (wall
// clock) out of its segments in dir into one MP4 at out, without
// re-encoding: it starts at the last keyframe at or before from, so the
// clip plays from its first frame, and ends with the first packet after
// to. Segments that follow each other become one continuous clip.
func CutClip(dir, camera string, from, to time.Time, out string) (time.Duration, error) {
	ents, err := os.ReadDir(filepath.Join(dir, camera))
	if err != nil {
		return 0, fmt.Errorf("clip %s: %w", camera, err)
	}
	type seg struct {
		path  string
		start time.Time
	}
	var segs []seg
	for _, e := range ents {
		if t, ok := segmentStart(camera, e.Name()); ok {
			segs = append(segs, seg{filepath.Join(dir, camera, e.Name()), t})
		}
	}
	slices.SortFunc(segs, func(a, b seg) int { return a.start.Compare(b.start) })
	// a segment may hold the window if it starts before to and the next one
	// starts after from
	var use []seg
	for i, s := range segs {
		if !s.start.Before(to) {
			break
		}
		if i+1 < len(segs) && !segs[i+1].start.After(from) {
			continue
		}
		use = append(use, s)
	}
	if len(use) == 0 {
		return 0, fmt.Errorf("clip %s %s..%s: %w", camera, from.Format(time.RFC3339), to.Format(time.RFC3339), ErrNoFootage)
	}
	c := &clipWriter{path: out, from: from, to: to, lastDTS: -1}
	defer c.free()
	for _, s := range use {
		if err := c.copySegment(s.path, s.start); err != nil {
			c.abort()
			return 0, err
		}
		if c.done {
			break
		}
	}
	return c.finish()
}

// clipWriter is one clip being written.
type clipWriter struct {
	path     string
	from, to time.Time
	out      *mp4Copy        // nil until the first segment gives the stream
	tb       astiav.Rational // the output stream's, known after the header
	zero     time.Time       // the wall clock of the clip's first packet
	gop      []*astiav.Packet
	gopAt    []time.Time
	lastDTS  int64 // output time base; -1 before the first packet
	shift    int64 // this segment's correction, output time base
	segFirst bool  // the next packet is its segment's first written
	started  bool
	done     bool
	last     time.Duration
}

func (c *clipWriter) copySegment(path string, start time.Time) error {
	in := astiav.AllocFormatContext()
	if in == nil {
		return errors.New("clip: cannot allocate a format context")
	}
	if err := in.OpenInput(path, nil, nil); err != nil {
		in.Free()
		return fmt.Errorf("clip: open %s: %w", path, err)
	}
	defer in.CloseInput()
	if err := in.FindStreamInfo(nil); err != nil {
		return fmt.Errorf("clip: read %s: %w", path, err)
	}
	var ist *astiav.Stream
	for _, s := range in.Streams() {
		if s.CodecParameters().MediaType() == astiav.MediaTypeVideo {
			ist = s
			break
		}
	}
	if ist == nil {
		return fmt.Errorf("clip: %s has no video", path)
	}
	if c.out == nil {
		if err := c.open(ist.CodecParameters()); err != nil {
			return err
		}
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	itb := ist.TimeBase()
	c.segFirst, c.shift = true, 0
	for !c.done {
		if err := in.ReadFrame(pkt); err != nil {
			if errors.Is(err, astiav.ErrEof) {
				return nil
			}
			// a segment cut short by a kill ends at its last whole fragment
			return nil
		}
		if pkt.StreamIndex() != ist.Index() || ts(pkt) == astiav.NoPtsValue {
			pkt.Unref()
			continue
		}
		at := start.Add(time.Duration(float64(ts(pkt)) * itb.ToDouble() * float64(time.Second)))
		err := c.take(pkt, itb, at)
		pkt.Unref()
		if err != nil {
			return err
		}
	}
	return nil
}

// take handles one packet at wall time at: before the window only the
// packets since the latest keyframe are kept, to start the clip with.
func (c *clipWriter) take(pkt *astiav.Packet, itb astiav.Rational, at time.Time) error {
	if at.After(c.to) && c.started {
		c.done = true
		return nil
	}
	if !c.started {
		if pkt.Flags().Has(astiav.PacketFlagKey) {
			c.dropGOP()
		}
		if len(c.gop) == 0 && !pkt.Flags().Has(astiav.PacketFlagKey) {
			return nil
		}
		cp := pkt.Clone()
		if cp == nil {
			return errors.New("clip: cannot copy a packet")
		}
		// keep timestamps as wall times relative to the clip: rescaled later
		c.gop = append(c.gop, cp)
		c.gopAt = append(c.gopAt, at)
		if at.Before(c.from) {
			return nil
		}
		c.started = true
		c.zero = c.gopAt[0]
		for i, p := range c.gop {
			if err := c.write(p, itb, c.gopAt[i]); err != nil {
				return err
			}
		}
		c.dropGOP()
		return nil
	}
	return c.write(pkt, itb, at)
}

func (c *clipWriter) write(pkt *astiav.Packet, itb astiav.Rational, at time.Time) error {
	// The clip's clock is wall time since its first packet, so segments
	// that follow each other join without a jump; dts keeps its offset
	// from pts (B-frames).
	rel := at.Sub(c.zero)
	t := av(rel, c.tb)
	off := int64(0)
	if p, d := pkt.Pts(), pkt.Dts(); p != astiav.NoPtsValue && d != astiav.NoPtsValue {
		off = av(time.Duration(float64(p-d)*itb.ToDouble()*float64(time.Second)), c.tb)
	}
	// A segment's name is when its first packet arrived, which a source's
	// start-up burst makes late: where that puts a segment's start before
	// the end of the one before, it moves on to follow it.
	if c.segFirst {
		c.segFirst = false
		if d := t - off; c.lastDTS >= 0 && d <= c.lastDTS {
			c.shift = c.lastDTS + 1 - d
		}
	}
	t += c.shift
	dts := t - off
	if dts <= c.lastDTS {
		dts = c.lastDTS + 1
		t = max(t, dts)
	}
	c.lastDTS = dts
	pkt.SetPts(t)
	pkt.SetDts(dts)
	pkt.SetDuration(0)
	pkt.SetStreamIndex(c.out.st.Index())
	pkt.SetPos(-1)
	if rel > c.last {
		c.last = rel
	}
	if err := c.out.fc.WriteInterleavedFrame(pkt); err != nil {
		return fmt.Errorf("clip %s: write: %w", c.path, err)
	}
	return nil
}

func av(d time.Duration, tb astiav.Rational) int64 {
	return int64(d.Seconds()*float64(tb.Den())/float64(tb.Num()) + 0.5)
}

func (c *clipWriter) open(par *astiav.CodecParameters) error {
	m, err := createMP4Copy(c.path, c.path+".partial", par, astiav.NewRational(1, 90000), false)
	if err != nil {
		return fmt.Errorf("clip: %w", err)
	}
	c.out, c.tb = m, m.st.TimeBase()
	return nil
}

func (c *clipWriter) dropGOP() {
	for _, p := range c.gop {
		p.Free()
	}
	c.gop, c.gopAt = c.gop[:0], c.gopAt[:0]
}

// finish writes the trailer and moves the clip into place.
func (c *clipWriter) finish() (time.Duration, error) {
	if !c.started {
		c.abort()
		return 0, fmt.Errorf("clip %s: %w", c.path, ErrNoFootage)
	}
	err := c.out.fc.WriteTrailer()
	c.free()
	if err == nil {
		err = os.Rename(c.path+".partial", c.path)
	}
	if err != nil {
		os.Remove(c.path + ".partial")
		return 0, fmt.Errorf("clip %s: %w", c.path, err)
	}
	return c.last, nil
}

func (c *clipWriter) abort() {
	c.free()
	os.Remove(c.path + ".partial")
}

func (c *clipWriter) free() {
	c.dropGOP()
	if c.out != nil {
		c.out.close()
	}
}
