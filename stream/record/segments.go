package record

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"
)

// SegmentConfig configures one camera's continuous recording in source
// mode: the camera's own compressed packets copied into MP4 segments, never
// re-encoded.
type SegmentConfig struct {
	// Dir is the recordings folder; the camera's segments go in
	// Dir/<Camera>/, named <Camera>-<UTC start>.mp4.
	Dir    string
	Camera string
	// Segment is a segment's length: a new one starts at the first
	// keyframe after it. Default 10 minutes.
	Segment time.Duration
	// RetainAge deletes segments that ended longer ago than this (0: keep
	// them); RetainBytes deletes the oldest while the camera's segments
	// hold more than this (0: no limit). The segment being written is
	// never deleted.
	RetainAge   time.Duration
	RetainBytes int64
	// Queue bounds the packets waiting for the disk (default 1024, about
	// 40 s at 25 fps). A full queue drops packets up to the next keyframe,
	// counted, so a slow disk never holds up decoding.
	Queue int
	// OnSegment hears of every segment when it opens, every SegmentReport
	// of video while it grows, and when it closes (the event store lists
	// them); OnDelete of every segment retention removed. Both are called
	// on the recorder's goroutine and must return quickly.
	OnSegment func(Segment)
	OnDelete  func(path string)
	Logger    *slog.Logger
}

// Segment is one recorded file.
type Segment struct {
	Camera string
	Path   string
	// Start is the wall clock when its first packet arrived.
	Start    time.Time
	Duration time.Duration
	Bytes    int64
	// Done: the segment is complete; before, it is still being written.
	Done bool
}

// SegmentReport is how much video a growing segment gets between its
// reports to OnSegment.
const SegmentReport = 10 * time.Second

// RecorderStats are a Recorder's counters, for /metrics.
type RecorderStats struct {
	Segments int64 // closed segments written
	Packets  int64 // packets written
	Dropped  int64 // packets not written: queue full, or no keyframe yet
	Deleted  int64 // segments removed by retention
	// DiskBytes is what the camera's segments hold on disk now, the one
	// being written included; Files counts them.
	DiskBytes int64
	Files     int
}

// SegmentPath is where a camera's segment that starts at start goes, in a
// recordings folder (annotated recording names its segments so too, so
// retention, the store and clips treat both modes alike).
func SegmentPath(dir, camera string, start time.Time) string {
	return filepath.Join(dir, camera, segmentName(camera, start))
}

// segmentName is what a recorder writes and the only names its retention
// deletes: a folder shared with other files loses none of them.
func segmentName(camera string, start time.Time) string {
	return camera + "-" + start.UTC().Format("20060102T150405.000Z") + ".mp4"
}

func segmentPattern(camera string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(camera) + `-\d{8}T\d{6}\.\d{3}Z\.mp4$`)
}

// Recorder writes a camera's packets (decode.PacketTap) into fragmented MP4
// segments on its own goroutine: each keyframe starts a fragment that goes
// to the file when complete, so a segment is readable while written and a
// process killed mid-way loses at most the fragment in progress.
type Recorder struct {
	cfg     SegmentConfig
	dir     string
	pattern *regexp.Regexp
	items   chan tapItem
	done    chan struct{}
	once    sync.Once

	// decoding goroutine's side
	waitKey bool
	lost    bool // this session's Begin did not get through

	ann annotated // mode annotated: the drawn frames' segment

	segments, packets, dropped, deleted atomic.Int64
	diskBytes                           atomic.Int64
	files                               atomic.Int64
}

type tapItem struct {
	begin *astiav.CodecParameters // Begin: an owned copy
	tb    astiav.Rational
	pkt   *astiav.Packet // Packet: an owned clone
	end   bool
}

// NewRecorder creates the camera's folder and starts the writer.
func NewRecorder(cfg SegmentConfig) (*Recorder, error) {
	if cfg.Segment <= 0 {
		cfg.Segment = 10 * time.Minute
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Camera == "" || strings.ContainsAny(cfg.Camera, `/\`) {
		return nil, fmt.Errorf("record: camera name %q", cfg.Camera)
	}
	dir := filepath.Join(cfg.Dir, cfg.Camera)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("record %s: %w", cfg.Camera, err)
	}
	r := &Recorder{cfg: cfg, dir: dir, pattern: segmentPattern(cfg.Camera),
		items: make(chan tapItem, cfg.Queue), done: make(chan struct{}), waitKey: true}
	r.measure()
	go r.run()
	return r, nil
}

// Begin implements decode.PacketTap.
func (r *Recorder) Begin(par *astiav.CodecParameters, tb astiav.Rational) {
	cp := astiav.AllocCodecParameters()
	if err := par.Copy(cp); err != nil {
		cp.Free()
		r.cfg.Logger.Warn("record: codec parameters", "camera", r.cfg.Camera, "err", err)
		return
	}
	r.waitKey = true
	// Begin must reach the writer: it says which stream the packets after
	// it belong to. A disk that stays stuck for a second costs the session
	// its recording (counted), never the decoding its pace.
	select {
	case r.items <- tapItem{begin: cp, tb: tb}:
		r.lost = false
	case <-time.After(time.Second):
		cp.Free()
		r.lost = true
		r.cfg.Logger.Warn("record: the disk is behind; this session is not recorded", "camera", r.cfg.Camera)
	}
}

// Packet implements decode.PacketTap: it never blocks.
func (r *Recorder) Packet(pkt *astiav.Packet) {
	key := pkt.Flags().Has(astiav.PacketFlagKey)
	if r.lost || (r.waitKey && !key) {
		r.dropped.Add(1)
		return
	}
	c := pkt.Clone()
	if c == nil {
		r.dropped.Add(1)
		r.waitKey = true
		return
	}
	select {
	case r.items <- tapItem{pkt: c}:
		r.waitKey = false
	default:
		c.Free()
		r.dropped.Add(1)
		// the packets after a lost one would not decode until a keyframe
		r.waitKey = true
	}
}

// End implements decode.PacketTap. When the queue is full the segment is
// closed by the next Begin or Close instead.
func (r *Recorder) End() {
	select {
	case r.items <- tapItem{end: true}:
	default:
	}
}

// Close writes what is queued, closes the segment in progress and stops
// the writer. It is idempotent; the Recorder must get no packets after it.
func (r *Recorder) Close() error {
	r.once.Do(func() { close(r.items) })
	<-r.done
	r.ann.mu.Lock()
	r.closeAnnotated()
	r.ann.mu.Unlock()
	return nil
}

// Stats reads the counters; any goroutine may call it.
func (r *Recorder) Stats() RecorderStats {
	return RecorderStats{Segments: r.segments.Load(), Packets: r.packets.Load(), Dropped: r.dropped.Load(),
		Deleted: r.deleted.Load(), DiskBytes: r.diskBytes.Load(), Files: int(r.files.Load())}
}

// Dir is the folder the camera's segments are in.
func (r *Recorder) Dir() string { return r.dir }

// output is one open segment.
type output struct {
	*mp4Copy
	seg      Segment
	base     int64 // the first packet's dts (input time base): the segment's zero
	lastEnd  int64 // pts+duration of the latest packet, input time base
	reported time.Duration
}

// report tells OnSegment how far a growing segment has got.
func (r *Recorder) report(o *output, at time.Duration) {
	o.reported = at
	seg := o.seg
	seg.Duration = at
	r.announce(seg, false)
}

// announce tells OnSegment of seg with its size on disk now: still
// growing, or done, when it also counts as a closed segment and retention
// runs (a segment of either mode).
func (r *Recorder) announce(seg Segment, done bool) {
	if done {
		r.segments.Add(1)
	}
	if r.cfg.OnSegment != nil {
		if st, err := os.Stat(seg.Path); err == nil {
			seg.Bytes = st.Size()
		}
		seg.Done = done
		r.cfg.OnSegment(seg)
	}
	if done {
		r.retain("")
	}
}

func (r *Recorder) run() {
	defer close(r.done)
	var (
		par *astiav.CodecParameters
		tb  astiav.Rational
		out *output
	)
	closeOut := func() {
		if out == nil {
			return
		}
		seg, err := r.finish(out, tb)
		out = nil
		if err != nil {
			r.cfg.Logger.Error("record: close segment", "camera", r.cfg.Camera, "file", seg.Path, "err", err)
		}
		r.announce(seg, true)
	}
	defer func() {
		closeOut()
		if par != nil {
			par.Free()
		}
	}()
	for it := range r.items {
		switch {
		case it.begin != nil:
			closeOut()
			if par != nil {
				par.Free()
			}
			par, tb = it.begin, it.tb
		case it.end:
			closeOut()
		case it.pkt != nil:
			pkt := it.pkt
			if par == nil {
				pkt.Free()
				r.dropped.Add(1)
				continue
			}
			key := pkt.Flags().Has(astiav.PacketFlagKey)
			if out != nil && key && r.elapsed(out, pkt, tb) >= r.cfg.Segment {
				closeOut()
			}
			if out == nil {
				if !key {
					pkt.Free()
					r.dropped.Add(1)
					continue
				}
				o, err := r.open(par, pkt)
				if err != nil {
					pkt.Free()
					r.dropped.Add(1)
					r.cfg.Logger.Error("record: open segment", "camera", r.cfg.Camera, "err", err)
					continue
				}
				out = o
				r.retain(out.seg.Path)
				r.report(out, 0)
			}
			at := r.elapsed(out, pkt, tb) // before write rebases the packet's timestamps
			if err := r.write(out, pkt, tb); err != nil {
				r.dropped.Add(1)
				r.cfg.Logger.Warn("record: write", "camera", r.cfg.Camera, "file", out.seg.Path, "err", err)
			} else {
				if n := r.packets.Add(1); n%128 == 0 {
					// the segment in progress counts against the byte
					// limit too: older ones go while it grows
					r.retain(out.seg.Path)
				}
				if at >= out.reported+SegmentReport {
					r.report(out, at)
				}
			}
			pkt.Free()
		}
	}
}

func ts(pkt *astiav.Packet) int64 {
	if p := pkt.Pts(); p != astiav.NoPtsValue {
		return p
	}
	return pkt.Dts()
}

func (r *Recorder) elapsed(o *output, pkt *astiav.Packet, tb astiav.Rational) time.Duration {
	t := ts(pkt)
	if t == astiav.NoPtsValue {
		return 0
	}
	return time.Duration(float64(t-o.base) * tb.ToDouble() * float64(time.Second))
}

func (r *Recorder) open(par *astiav.CodecParameters, first *astiav.Packet) (*output, error) {
	start := time.Now()
	path := filepath.Join(r.dir, segmentName(r.cfg.Camera, start))
	m, err := createMP4Copy(path, path, par, astiav.Rational{}, true)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	o := &output{mp4Copy: m, seg: Segment{Camera: r.cfg.Camera, Path: path, Start: start}}
	o.base = first.Dts()
	if o.base == astiav.NoPtsValue {
		o.base = ts(first)
	}
	return o, nil
}

func (r *Recorder) write(o *output, pkt *astiav.Packet, tb astiav.Rational) error {
	if ts(pkt) == astiav.NoPtsValue {
		return errors.New("packet without a timestamp")
	}
	if p := pkt.Pts(); p != astiav.NoPtsValue {
		pkt.SetPts(p - o.base)
		if end := p + pkt.Duration(); end > o.lastEnd {
			o.lastEnd = end
		}
	}
	if d := pkt.Dts(); d != astiav.NoPtsValue {
		pkt.SetDts(d - o.base)
	}
	pkt.SetStreamIndex(o.st.Index())
	pkt.RescaleTs(tb, o.st.TimeBase())
	pkt.SetPos(-1)
	return o.fc.WriteInterleavedFrame(pkt)
}

func (r *Recorder) finish(o *output, tb astiav.Rational) (Segment, error) {
	err := o.fc.WriteTrailer()
	o.close()
	seg := o.seg
	if o.lastEnd > o.base {
		seg.Duration = time.Duration(float64(o.lastEnd-o.base) * tb.ToDouble() * float64(time.Second))
	}
	return seg, err
}

// ownSegments lists the camera's segments, oldest first (their names sort
// by start time).
func (r *Recorder) ownSegments() ([]os.FileInfo, error) {
	ents, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, err
	}
	var out []os.FileInfo
	for _, e := range ents {
		if !e.Type().IsRegular() || !r.pattern.MatchString(e.Name()) {
			continue
		}
		if fi, err := e.Info(); err == nil {
			out = append(out, fi)
		}
	}
	slices.SortFunc(out, func(a, b os.FileInfo) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// retain deletes the oldest segments beyond the age and size limits,
// never current (the segment being written), then measures what is left.
func (r *Recorder) retain(current string) {
	segs, err := r.ownSegments()
	if err != nil {
		r.cfg.Logger.Warn("record: list segments", "dir", r.dir, "err", err)
		return
	}
	var total int64
	for _, s := range segs {
		total += s.Size()
	}
	now := time.Now()
	for _, s := range segs {
		path := filepath.Join(r.dir, s.Name())
		if path == current {
			continue
		}
		old := r.cfg.RetainAge > 0 && now.Sub(s.ModTime()) > r.cfg.RetainAge
		big := r.cfg.RetainBytes > 0 && total > r.cfg.RetainBytes
		if !old && !big {
			continue
		}
		if err := os.Remove(path); err != nil {
			r.cfg.Logger.Warn("record: retention", "file", path, "err", err)
			continue
		}
		total -= s.Size()
		r.deleted.Add(1)
		if r.cfg.OnDelete != nil {
			r.cfg.OnDelete(path)
		}
	}
	r.measure()
}

func (r *Recorder) measure() {
	segs, err := r.ownSegments()
	if err != nil {
		return
	}
	var total int64
	for _, s := range segs {
		total += s.Size()
	}
	r.diskBytes.Store(total)
	r.files.Store(int64(len(segs)))
}
