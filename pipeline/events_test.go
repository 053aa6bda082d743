package pipeline

import (
	"bytes"
	"image/jpeg"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/events"
	"github.com/htcstream/htcstream/stream/record"
	"github.com/htcstream/htcstream/track"
)

// eventLog is an events.Publisher that keeps what it gets.
type eventLog struct {
	mu  sync.Mutex
	evs []events.Event
}

func (l *eventLog) Publish(ev events.Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
	return nil
}

func (l *eventLog) all() []events.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]events.Event(nil), l.evs...)
}

// stageFrame is frame seq of a 100x100 stream at 10 fps with the given
// detections, through the stage as the pipeline calls it.
func stageFrame(s *EventStage, seq int64, dets ...detection.Detection) *Output {
	o := &Output{Stream: "cam", Frame: &decode.Frame{Seq: seq, PTS: time.Duration(seq) * 100 * time.Millisecond,
		Captured: time.Unix(1000, 0).Add(time.Duration(seq) * 100 * time.Millisecond), Width: 100, Height: 100,
		RGB: make([]byte, 100*100*3)}, Result: cascade.Result{Width: 100, Height: 100, Detections: dets}}
	s.Track(o)
	s.Drawn(o)
	return o
}

// box is a detection of class label of the stage tests' classes, named as
// the model names them.
func box(x, y, w, h float32, score float32, label int) detection.Detection {
	return detection.Detection{Box: detection.Box{X1: x, Y1: y, X2: x + w, Y2: y + h}, Score: score,
		Label: label, Class: []string{"circle", "square", "star"}[label],
		StageScores: []float32{score, score, score},
		Mask:        detection.Mask{X: int(x), Y: int(y), W: 2, H: 2, Bits: []byte{1, 1, 1, 0}}}
}

// A circle walks from the left half into the right half (a zone) and
// leaves the frame; a square flickers for two frames (never confirmed); a
// star stays but its label is filtered out. The events: new (on
// confirmation), update on entering the zone, update for a better score
// no sooner than the interval, end after max_misses, every event with its
// mask; the display threshold drops a low-score detection but not its
// track.
func TestEventStageNewUpdateEnd(t *testing.T) {
	rules := defaultEvents().EventRules
	rules.Enabled = true
	rules.Tracker.MaxMisses = 3
	rules.UpdateInterval = 500 * time.Millisecond
	rules.Labels = []string{"circle", "square"}
	log := &eventLog{}
	keepAbove := func(d *detection.Detection) bool { return d.Score >= 0.3 }
	s, err := NewEventStage(EventStageConfig{Camera: "cam", Classes: []string{"circle", "square", "star"}, Rules: rules,
		Zones: map[string]Zone{"right": {{0.5, 0}, {1, 0}, {1, 1}, {0.5, 1}}}, Keep: keepAbove, Publishers: []events.Publisher{log}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for seq := int64(0); seq < 20; seq++ {
		var dets []detection.Detection
		if seq < 16 {
			score := float32(0.7)
			switch {
			case seq == 5:
				score = 0.2 // low: extends the track, not drawn
			case seq >= 10:
				score = 0.8 // better, 0.1 s after the zone's update: sent at 1.4 s
			}
			dets = append(dets, box(float32(5*seq), 40, 10, 10, score, 0))
		}
		if seq == 3 || seq == 4 {
			dets = append(dets, box(80, 80, 5, 5, 0.9, 1))
		}
		dets = append(dets, box(10, 10, 8, 8, 0.8, 2))
		o := stageFrame(s, seq, dets...)
		if seq == 5 && len(o.Result.Detections) != 1 {
			t.Errorf("frame 5: the 0.2 circle is drawn: %+v", o.Result.Detections)
		}
		if seq < 16 && seq != 5 {
			ids = append(ids, o.Result.Detections[0].TrackID)
		}
	}
	s.End()
	for i, id := range ids[2:] {
		if id != ids[2] || id == 0 {
			t.Fatalf("circle's ids %v: not stable from frame 2 (at %d)", ids, i+2)
		}
	}
	if ids[0] != 0 || ids[1] != 0 {
		t.Errorf("ids before confirmation: %v", ids[:2])
	}
	var got []string
	for _, ev := range log.all() {
		got = append(got, string(ev.Type)+" "+ev.Label)
		if ev.Mask == nil || ev.Width != 100 || len(ev.StageScores) != 3 {
			t.Errorf("%s: mask %v, %dx%d, stages %v", ev.Type, ev.Mask, ev.Width, ev.Height, ev.StageScores)
		}
	}
	want := []string{"new circle", "update circle", "update circle", "end circle"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	evs := log.all()
	// the box's centre, 5*seq + 5, crosses x = 50 at frame 9
	if evs[1].LastPTS != 900*time.Millisecond || len(evs[1].Zones) != 1 || len(evs[1].EnteredZones) != 1 || evs[1].EnteredZones[0] != "right" {
		t.Errorf("zone update at %v: entered %v, in %v", evs[1].LastPTS, evs[1].EnteredZones, evs[1].Zones)
	}
	if evs[2].BestScore != 0.8 || evs[2].LastPTS != 1400*time.Millisecond || len(evs[3].EnteredZones) != 1 {
		t.Errorf("score update %+v; end %+v", evs[2], evs[3])
	}
	if evs[0].ID != evs[3].ID || evs[0].ID != events.EventID("cam", time.Unix(1000, 0), int64(ids[2])) {
		t.Errorf("event ids %q, %q", evs[0].ID, evs[3].ID)
	}
}

// With min_duration and a zone filter, new waits until the track passes
// both; a track that never does makes no event at all (no end either).
func TestEventStageFilterDelaysNew(t *testing.T) {
	rules := defaultEvents().EventRules
	rules.Enabled = true
	rules.Tracker = track.DefaultSettings()
	rules.Tracker.MaxMisses = 2
	rules.MinDuration = time.Second
	rules.Zones = []string{"bottom"}
	log := &eventLog{}
	s, err := NewEventStage(EventStageConfig{Camera: "cam", Classes: []string{"circle"}, Rules: rules,
		Zones: map[string]Zone{"bottom": {{0, 0.5}, {1, 0.5}, {1, 1}, {0, 1}}}, Publishers: []events.Publisher{log}})
	if err != nil {
		t.Fatal(err)
	}
	for seq := int64(0); seq < 30; seq++ {
		var dets []detection.Detection
		if seq < 20 {
			dets = append(dets, box(10, float32(2*seq), 10, 10, 0.9, 0))  // bottom edge crosses y=50 at seq 20: never
			dets = append(dets, box(60, 30+float32(seq), 10, 10, 0.9, 0)) // in the zone from seq 10
		}
		stageFrame(s, seq, dets...)
	}
	s.End()
	evs := log.all()
	if len(evs) < 2 || evs[0].Type != events.EventNew || evs[len(evs)-1].Type != events.EventEnd {
		t.Fatalf("events %+v", evs)
	}
	for _, ev := range evs {
		if ev.Box[0] != 60 {
			t.Errorf("an event of the track that never entered the zone: %+v", ev)
		}
	}
	if evs[0].LastPTS < time.Second || evs[0].EnteredZones[0] != "bottom" {
		t.Errorf("new at %v (min duration 1s), entered %v", evs[0].LastPTS, evs[0].EnteredZones)
	}
}

// Snapshots are of the frame as drawn, or with frame: clean as decoded
// (the stage copies it before the drawer paints over it in place); the
// events name the file.
func TestEventStageSnapshots(t *testing.T) {
	for _, clean := range []bool{false, true} {
		st, err := record.NewSnapshotStore(record.SnapshotStoreConfig{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		rules := defaultEvents().EventRules
		rules.Enabled = true
		log := &eventLog{}
		s, err := NewEventStage(EventStageConfig{Camera: "cam", Classes: []string{"circle"}, Rules: rules, Store: st, Clean: clean,
			Publishers: []events.Publisher{log}})
		if err != nil {
			t.Fatal(err)
		}
		for seq := int64(0); seq < 4; seq++ {
			o := &Output{Stream: "cam", Frame: &decode.Frame{Seq: seq, PTS: time.Duration(seq) * 100 * time.Millisecond,
				Captured: time.Now(), Width: 16, Height: 16, RGB: bytes.Repeat([]byte{0, 0, 200}, 16*16)},
				Result: cascade.Result{Width: 16, Height: 16, Detections: []detection.Detection{box(4, 4, 6, 6, 0.9, 0)}}}
			s.Track(o)
			for i := 0; i < len(o.Frame.RGB); i += 3 { // the drawer paints the frame red
				o.Frame.RGB[i], o.Frame.RGB[i+2] = 200, 0
			}
			s.Drawn(o)
		}
		s.End()
		evs := log.all()
		if len(evs) != 2 || evs[0].Snapshot == "" || evs[0].Snapshot != evs[1].Snapshot {
			t.Fatalf("clean %v: events %+v", clean, evs)
		}
		f, err := os.Open(evs[0].Snapshot)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		r, _, b, _ := img.At(8, 8).RGBA()
		if blue := b > r; blue != clean {
			t.Errorf("clean %v: snapshot pixel r %d b %d", clean, r>>8, b>>8)
		}
	}
}

// lockedBuffer is a log destination the event worker's goroutine writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fullFolder is a folder where every snapshot fails, each with its own
// temporary file's name in the error: a 64 KiB tmpfs filled up as root (a
// full disk, the case), else a read-only folder. free makes room.
func fullFolder(t *testing.T) (dir string, free func()) {
	t.Helper()
	dir = t.TempDir()
	if os.Geteuid() != 0 {
		os.Chmod(dir, 0o555)
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		return dir, func() { os.Chmod(dir, 0o755) }
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break // ENOSPC: full
		}
	}
	f.Close()
	return dir, func() { os.Remove(filler) }
}

// Issue 21 D7: on a full disk every snapshot failed with an ERROR line of
// its own (285 lines in 40 s). One line for the run of failures, every
// failure counted in htcstream_snapshots_total, one line when they save
// again.
func TestEventSnapshotFailuresLoggedOnceAndCounted(t *testing.T) {
	dir, free := fullFolder(t)
	st, err := record.NewSnapshotStore(record.SnapshotStoreConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	m := NewMetricsWith(MetricsConfig{Classes: []string{"circle"}})
	rules := defaultEvents().EventRules
	rules.Enabled = true
	s, err := NewEventStage(EventStageConfig{Camera: "cam", Classes: []string{"circle"}, Rules: rules, Store: st,
		Publishers: []events.Publisher{&eventLog{}}, Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	frame := func(seq int64) {
		// four circles, each scoring better every frame: a snapshot each, each frame
		var dets []detection.Detection
		for i := range 4 {
			dets = append(dets, box(float32(5+22*i), 40, 10, 10, 0.5+0.02*float32(seq), 0))
		}
		stageFrame(s, seq, dets...)
		time.Sleep(20 * time.Millisecond) // the worker keeps up: failures, not skips
	}
	for seq := int64(0); seq < 10; seq++ {
		frame(seq)
	}
	free()
	for seq := int64(10); seq < 13; seq++ {
		frame(seq)
	}
	s.End()

	out := logs.String()
	if n := strings.Count(out, "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR lines for a run of failed snapshots, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "snapshots saved again") {
		t.Errorf("no line when snapshots were saved again:\n%s", out)
	}
	var b strings.Builder
	m.WriteTo(&b)
	failed := regexp.MustCompile(`htcstream_snapshots_total\{camera="cam",result="failed"\} (\d+)`).FindStringSubmatch(b.String())
	if failed == nil {
		t.Fatalf("no failed snapshots counted:\n%s", b.String())
	}
	if n, _ := strconv.Atoi(failed[1]); n < 10 {
		t.Errorf("%d failed snapshots counted, want one per failure (10 frames x 4 tracks, less any skipped)", n)
	}
	if !strings.Contains(b.String(), `htcstream_snapshots_total{camera="cam",result="saved"}`) {
		t.Errorf("no saved snapshots after room was made:\n%s", b.String())
	}
}

// A person half inside a doorway is in it by the share of its mask
// (zone_overlap), though the bottom centre of its box is outside; the
// point test, the default, says it is not.
func TestZoneByMaskShare(t *testing.T) {
	door := Zone{{0, 0}, {0.3, 0}, {0.3, 1}, {0, 1}}
	for _, c := range []struct {
		overlap float64
		in      bool
	}{{0, false}, {0.3, true}, {0.5, false}} {
		rules := defaultEvents().EventRules
		rules.Enabled = true
		rules.Zones = []string{"door"}
		log := &eventLog{}
		s, err := NewEventStage(EventStageConfig{Camera: "cam", Classes: []string{"circle"}, Rules: rules,
			Zones: map[string]Zone{"door": door}, ZoneOverlap: c.overlap, Publishers: []events.Publisher{log}})
		if err != nil {
			t.Fatal(err)
		}
		for seq := int64(0); seq < 5; seq++ {
			d := box(20, 30, 30, 40, 0.9, 0) // x 20..50: its bottom centre (35) is outside
			d.Mask = detection.Mask{X: 20, Y: 30, W: 30, H: 40, Bits: make([]byte, 30*40)}
			for i := range d.Mask.Bits {
				d.Mask.Bits[i] = 1 // 10 of its 30 columns are inside: a third
			}
			stageFrame(s, seq, d)
		}
		s.End()
		if got := len(log.all()) > 0; got != c.in {
			t.Errorf("zone_overlap %v: in the doorway %v, want %v (events %+v)", c.overlap, got, c.in, log.all())
		}
	}
}
