package record

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/internal/mediatest"
)

// clip renders an H.264 mp4 with the ffmpeg CLI: 25 fps, a keyframe every
// gop frames.
func clip(t *testing.T, seconds, gop int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cam.mp4")
	cmd := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i",
		"testsrc2=s=320x240:r=25:d="+strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "ultrafast",
		"-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// probe reads a file as a player would: its codec and the packets it holds.
func probe(t *testing.T, path string) (codec string, packets int, dur float64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
		"-show_entries", "stream=codec_name,nb_read_packets:format=duration", "-of", "default=nw=1", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", path, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "codec_name":
			codec = v
		case "nb_read_packets":
			packets, _ = strconv.Atoi(v)
		case "duration":
			dur, _ = strconv.ParseFloat(v, 64)
		}
	}
	return
}

// decodeAll runs a decoder over path with the recorder as its tap, as the
// ingest runner does for a camera.
func decodeAll(t *testing.T, path string, tap decode.PacketTap, pace time.Duration) int {
	t.Helper()
	d, err := decode.Open(path, decode.Options{Tap: tap})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n := 0
	for {
		_, err := d.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(pace)
	}
}

// The camera's own packets, copied: every packet lands in exactly one
// segment, each segment starts on a keyframe, plays on its own, and is
// named for the camera and its start.
func TestRecorderCopiesPacketsIntoSegments(t *testing.T) {
	src := clip(t, 8, 25) // a keyframe a second
	dir := t.TempDir()
	var segs []Segment
	growing := map[string]int{}
	r, err := NewRecorder(SegmentConfig{Dir: dir, Camera: "door", Segment: 2 * time.Second,
		OnSegment: func(s Segment) {
			if s.Done {
				segs = append(segs, s)
			} else {
				growing[s.Path]++ // the store lists a segment from its start
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	frames := decodeAll(t, src, r, 0)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if frames != 200 {
		t.Fatalf("decoded %d frames, want 200", frames)
	}
	if len(segs) != 4 {
		t.Fatalf("%d segments, want 4 of 2 s: %+v", len(segs), segs)
	}
	if len(growing) != 4 {
		t.Errorf("segments reported while growing: %v", growing)
	}
	total := 0
	pattern := segmentPattern("door")
	for _, s := range segs {
		codec, packets, dur := probe(t, s.Path)
		if codec != "h264" || packets != 50 || dur < 1.9 || dur > 2.1 {
			t.Errorf("%s: %s, %d packets, %.2f s; want h264, 50, 2 s", s.Path, codec, packets, dur)
		}
		if !pattern.MatchString(filepath.Base(s.Path)) || filepath.Dir(s.Path) != filepath.Join(dir, "door") {
			t.Errorf("segment %s is not named <dir>/door/door-<start>.mp4", s.Path)
		}
		if s.Duration < 1900*time.Millisecond || s.Duration > 2100*time.Millisecond || s.Bytes <= 0 {
			t.Errorf("segment %+v", s)
		}
		total += packets
	}
	st := r.Stats()
	if total != 200 || st.Packets != 200 || st.Dropped != 0 || st.Segments != 4 || st.Files != 4 {
		t.Fatalf("%d packets in the segments, stats %+v", total, st)
	}
}

// A recording process killed with SIGKILL leaves segments a player reads,
// short of the fragment in progress at most.
func TestRecorderSurvivesSIGKILL(t *testing.T) {
	if os.Getenv("RECORD_CHILD") != "" {
		r, err := NewRecorder(SegmentConfig{Dir: os.Getenv("RECORD_DIR"), Camera: "yard", Segment: time.Hour})
		if err != nil {
			os.Exit(3)
		}
		// real time: the parent kills it in the middle
		decodeAll(t, os.Getenv("RECORD_CHILD"), r, 40*time.Millisecond)
		os.Exit(0)
	}
	src := clip(t, 30, 25)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecorderSurvivesSIGKILL$")
	cmd.Env = append(os.Environ(), "RECORD_CHILD="+src, "RECORD_DIR="+dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// wait until three seconds of fragments are on disk, then kill
	seg := ""
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m, _ := filepath.Glob(filepath.Join(dir, "yard", "yard-*.mp4")); len(m) == 1 {
			seg = m[0]
			if packets, _ := mediatest.CountPackets(seg); packets >= 75 {
				break
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no growing segment in %s", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	codec, packets, _ := probe(t, seg)
	if codec != "h264" || packets < 75 || packets%25 != 0 {
		t.Fatalf("after SIGKILL %s has %s, %d packets: want whole 1 s fragments, at least 3", seg, codec, packets)
	}
	t.Logf("killed with %d packets (%d whole fragments) readable in %s", packets, packets/25, filepath.Base(seg))
}

// Retention by bytes over a recording three times the limit: the oldest
// segments go, the one being written never, files that are not the
// recorder's never, and what stays is within the limit.
func TestRecorderRetentionByBytes(t *testing.T) {
	src := clip(t, 12, 25)
	dir := t.TempDir()
	// others' files in the camera's folder, with old times
	own := filepath.Join(dir, "lot")
	os.MkdirAll(own, 0o755)
	foreign := []string{filepath.Join(own, "notes.mp4"), filepath.Join(own, "lot-holiday.mp4"), filepath.Join(own, "lot-20240101T000000.000Z.mp4.bak")}
	for _, f := range foreign {
		os.WriteFile(f, make([]byte, 1<<20), 0o644)
		old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		os.Chtimes(f, old, old)
	}
	// measure a second's size first, then set the limit to a third of all
	probeRec, _ := NewRecorder(SegmentConfig{Dir: t.TempDir(), Camera: "lot", Segment: time.Hour})
	decodeAll(t, src, probeRec, 0)
	probeRec.Close()
	all := probeRec.Stats().DiskBytes
	limit := all / 3

	r, err := NewRecorder(SegmentConfig{Dir: dir, Camera: "lot", Segment: time.Second, RetainBytes: limit, RetainAge: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	decodeAll(t, src, r, 0)
	r.Close()
	st := r.Stats()
	for _, f := range foreign {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("retention removed %s, which it did not write", f)
		}
	}
	if st.Deleted < 6 || st.DiskBytes > limit || st.DiskBytes < limit*3/4 {
		t.Fatalf("limit %d B of %d written: kept %d B in %d files, deleted %d", limit, all, st.DiskBytes, st.Files, st.Deleted)
	}
	t.Logf("limit %d B, %d B written in all, %d B kept (%.1f%% of the limit) in %d segments, %d deleted",
		limit, all, st.DiskBytes, 100*float64(st.DiskBytes)/float64(limit), st.Files, st.Deleted)
}
