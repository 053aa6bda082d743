package ingest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "clip.mp4")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := []struct {
		in   string
		kind Kind
		loc  string
	}{
		{file, File, file},
		{"file://" + file, File, file},
		{dir, Images, dir},
		{"rtsp://user:pw@127.0.0.1:8554/cam", RTSP, "rtsp://user:pw@127.0.0.1:8554/cam"},
		{"rtsps://cam.local/stream", RTSP, "rtsps://cam.local/stream"},
		{"https://example.test/live.m3u8", HTTP, "https://example.test/live.m3u8"},
		{"http://cam.local/video.cgi", HTTP, "http://cam.local/video.cgi"},
		{"https://example.test/v/clip.MP4?token=x", File, "https://example.test/v/clip.MP4?token=x"},
	}
	for _, c := range ok {
		s, err := Parse(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if s.Kind != c.kind || s.Location != c.loc {
			t.Errorf("%s: got %+v", c.in, s)
		}
	}
	bad := []struct{ in, says string }{
		{"", "empty"},
		{filepath.Join(dir, "missing.mp4"), "missing.mp4"},
		{"ftp://host/x", `unknown scheme "ftp"`},
		{"rtsp:///nohost", "no host"},
		{"/dev/video97", "camera /dev/video97 does not exist"},
		{"v4l2:///dev/video98", "camera /dev/video98 does not exist"},
		{"bogus://user:secret@host/x", "xxxxx"},
	}
	for _, c := range bad {
		_, err := Parse(c.in)
		if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: got %v, want an error saying %q", c.in, err, c.says)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error leaks the password: %v", c.in, err)
		}
	}
}

func TestLiveKinds(t *testing.T) {
	for k, live := range map[Kind]bool{File: false, Images: false, RTSP: true, Camera: true, HTTP: true} {
		if k.Live() != live {
			t.Errorf("%s.Live() = %v", k, !live)
		}
	}
}
