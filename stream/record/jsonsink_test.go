package record

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/detection"
	"github.com/htcstream/htcstream/stream/encode"
)

// regionMask is a mask region of a w x h disc-ish blob that varies with
// seed.
func regionMask(x, y, w, h int, seed int64) detection.Mask {
	m := detection.Mask{X: x, Y: y, W: w, H: h, Bits: make([]byte, w*h)}
	cx, cy := float64(w)/2, float64(h)/2
	r := math.Min(cx, cy) + float64(seed%3)
	for j := 0; j < h; j++ {
		for i := 0; i < w; i++ {
			if math.Hypot(float64(i)+0.5-cx, float64(j)+0.5-cy) <= r {
				m.Bits[j*w+i] = 1
			}
		}
	}
	return m
}

// sampleFrame has a mask inside the frame, one crossing its left and
// bottom edges, and a detection without a mask.
func sampleFrame(seq int64) FrameDetections {
	return FrameDetections{
		Stream: "cam0", Seq: seq, PTS: time.Duration(seq) * 40 * time.Millisecond, Width: 40, Height: 30,
		Detections: []detection.Detection{
			{Box: detection.Box{X1: 10, Y1: 5, X2: 22.5, Y2: 14}, Score: 0.91, Class: "person", Label: 0,
				StageScores: []float32{0.8, 0.9, 0.95}, Mask: regionMask(9, 4, 15, 12, seq)},
			{Box: detection.Box{X1: 0, Y1: 22, X2: 6, Y2: 30}, Score: 0.5, Class: "dog", Label: 16,
				StageScores: []float32{0.4, 0.5, 0.6}, Mask: regionMask(-3, 20, 10, 15, seq+1)},
			{Box: detection.Box{X1: 30, Y1: 1, X2: 39, Y2: 9}, Score: 0.25, Class: "car", Label: 2},
		},
	}
}

// fullMask paints a region into a w x h frame, clipping it.
func fullMask(m detection.Mask, w, h int) []byte {
	out := make([]byte, w*h)
	for j := 0; j < m.H; j++ {
		for i := 0; i < m.W; i++ {
			x, y := m.X+i, m.Y+j
			if x >= 0 && y >= 0 && x < w && y < h && m.Bits[j*m.W+i] != 0 {
				out[y*w+x] = 1
			}
		}
	}
	return out
}

type lineJSON struct {
	Stream     string  `json:"stream"`
	Seq        int64   `json:"seq"`
	PTSms      float64 `json:"pts_ms"`
	Width      int     `json:"width"`
	Height     int     `json:"height"`
	Detections []struct {
		Box         []float64 `json:"box"`
		Score       float64   `json:"score"`
		Label       string    `json:"label"`
		ClassID     int       `json:"class_id"`
		StageScores []float64 `json:"stage_scores"`
		Mask        *coco.RLE `json:"mask"`
	} `json:"detections"`
}

func TestJSONSinkLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dets.jsonl")
	s, err := NewJSONSink(path)
	if err != nil {
		t.Fatal(err)
	}
	frames := []FrameDetections{sampleFrame(0), {Stream: "cam0", Seq: 1, PTS: 40 * time.Millisecond, Width: 40, Height: 30}, sampleFrame(2)}
	for _, f := range frames {
		if err := s.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	// A bad frame is one error and leaves the file as it was.
	bad := sampleFrame(3)
	bad.Detections[0].Mask.Bits = bad.Detections[0].Mask.Bits[1:]
	if err := s.Write(bad); err == nil || !strings.Contains(err.Error(), "detection 0") {
		t.Errorf("short mask bits: %v", err)
	}
	bad = sampleFrame(3)
	bad.Detections[1].Score = float32(math.NaN())
	if err := s.Write(bad); err == nil || !strings.Contains(err.Error(), "score is NaN") {
		t.Errorf("NaN score: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Write(sampleFrame(9)); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v", err)
	}

	lines := readLines(t, path)
	if len(lines) != len(frames) {
		t.Fatalf("%d lines, want %d", len(lines), len(frames))
	}
	if !strings.Contains(lines[1], `"detections":[]`) || !strings.Contains(lines[0], `"counts":"`) {
		t.Errorf("line format: %s\n%s", lines[0], lines[1])
	}
	for k, line := range lines {
		var got lineJSON
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d: %v\n%s", k, err, line)
		}
		want := frames[k]
		if got.Stream != want.Stream || got.Seq != want.Seq || got.PTSms != float64(want.PTS.Milliseconds()) ||
			got.Width != want.Width || got.Height != want.Height || len(got.Detections) != len(want.Detections) {
			t.Fatalf("line %d: %+v", k, got)
		}
		for i, d := range got.Detections {
			wd := want.Detections[i]
			if d.Label != wd.Class || d.ClassID != wd.Label || float32(d.Score) != wd.Score ||
				float32(d.Box[2]) != wd.Box.X2 || len(d.StageScores) != len(wd.StageScores) {
				t.Errorf("line %d detection %d: %+v", k, i, d)
			}
			if wd.Mask.W == 0 {
				if d.Mask != nil {
					t.Errorf("line %d detection %d: a mask where none was given", k, i)
				}
				continue
			}
			if d.Mask == nil || d.Mask.Size != [2]int{want.Height, want.Width} {
				t.Fatalf("line %d detection %d: mask %+v", k, i, d.Mask)
			}
			bits, err := d.Mask.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(bits, fullMask(wd.Mask, want.Width, want.Height)) {
				t.Errorf("line %d detection %d: decoded mask differs from the region", k, i)
			}
		}
	}
}

// TestRegionRLEMatchesEncode checks the region encoder against coco.Encode
// of the full-frame mask, for regions inside, across and outside the
// frame's edges.
func TestRegionRLEMatchesEncode(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for n := 0; n < 300; n++ {
		fw, fh := 1+rng.Intn(20), 1+rng.Intn(20)
		m := detection.Mask{X: rng.Intn(fw+8) - 6, Y: rng.Intn(fh+8) - 6, W: rng.Intn(12), H: rng.Intn(12)}
		m.Bits = make([]byte, m.W*m.H)
		dense := rng.Float64()
		for i := range m.Bits {
			if rng.Float64() < dense {
				m.Bits[i] = byte(1 + rng.Intn(255))
			}
		}
		r, err := coco.EncodeRegion(m.X, m.Y, m.W, m.H, m.Bits, fw, fh)
		got := r.Counts
		if err != nil {
			t.Fatal(err)
		}
		want, err := coco.Encode(fullMask(m, fw, fh), fw, fh)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want.Counts) {
			t.Fatalf("frame %dx%d region %+v: counts %v, want %v", fw, fh, m, got, want.Counts)
		}
	}
	for _, c := range []struct {
		m      detection.Mask
		fw, fh int
	}{
		{detection.Mask{W: 2, H: 2, Bits: make([]byte, 3)}, 4, 4},
		{detection.Mask{W: -1, H: 2}, 4, 4},
		{detection.Mask{W: 1, H: 1, Bits: []byte{1}}, 0, 4},
		{detection.Mask{W: 1, H: 1, Bits: []byte{1}}, 1 << 20, 1 << 20},
	} {
		if _, err := coco.EncodeRegion(c.m.X, c.m.Y, c.m.W, c.m.H, c.m.Bits, c.fw, c.fh); err == nil {
			t.Errorf("region %+v in %dx%d: no error", c.m, c.fw, c.fh)
		}
	}
}

// TestJSONSinkSurvivesKill kills a writer with SIGKILL: the lines it wrote
// are all in the file, whole.
func TestJSONSinkSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "killed.jsonl")
	out, err := helperCmd(t, "jsonl-kill", path).CombinedOutput()
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper should die of SIGKILL: %v\n%s", err, out)
	}
	lines := readLines(t, path)
	if len(lines) != 3 {
		t.Fatalf("%d lines survived, want 3", len(lines))
	}
	for i, l := range lines {
		var got lineJSON
		if err := json.Unmarshal([]byte(l), &got); err != nil || got.Seq != int64(i) {
			t.Errorf("line %d: %v %+v", i, err, got)
		}
	}
}

func TestSinksNameAMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "no", "such")
	if _, err := NewJSONSink(filepath.Join(dir, "d.jsonl")); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("json sink: %v", err)
	}
	if _, err := encode.NewFileSink(filepath.Join(dir, "v.mp4"), encode.EncoderConfig{}); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("mp4 sink: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a sink created %s", dir)
	}
}

// A line carries the frame's wall-clock time (RFC 3339, UTC, always three
// digits of milliseconds) and, for an image folder's frames, the picture's
// file; a frame without them has neither key.
func TestJSONSinkTimeAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dets.jsonl")
	s, err := NewJSONSink(path)
	if err != nil {
		t.Fatal(err)
	}
	paris := time.FixedZone("CET", 3600)
	a := sampleFrame(0)
	a.Time = time.Date(2026, 3, 4, 13, 5, 6, 120_456_789, paris)
	a.File = "img 01.png"
	b := sampleFrame(1)
	b.Time = time.Date(2026, 3, 4, 12, 5, 7, 0, time.UTC)
	c := sampleFrame(2)
	for _, fd := range []FrameDetections{a, b, c} {
		if err := s.Write(fd); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		got = append(got, m)
	}
	if got[0]["time"] != "2026-03-04T12:05:06.120Z" || got[0]["file"] != "img 01.png" {
		t.Errorf("line 0: time %v file %v", got[0]["time"], got[0]["file"])
	}
	if got[1]["time"] != "2026-03-04T12:05:07.000Z" {
		t.Errorf("line 1: time %v", got[1]["time"])
	}
	if _, has := got[1]["file"]; has {
		t.Errorf("line 1 has a file without one: %s", lines[1])
	}
	if _, has := got[2]["time"]; has {
		t.Errorf("line 2 has a time without one: %s", lines[2])
	}
	if tm, err := time.Parse(time.RFC3339, got[0]["time"].(string)); err != nil || !tm.Equal(a.Time.Truncate(time.Millisecond)) {
		t.Errorf("time %v does not parse back as RFC 3339 (%v, %v)", got[0]["time"], tm, err)
	}
}
