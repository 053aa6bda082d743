package stream

import (
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClock is a settable clock for the age limit.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// solidRGB is a w x h picture of one colour.
func solidRGB(w, h int, r, g, b byte) []byte {
	p := make([]byte, w*h*3)
	for i := 0; i < len(p); i += 3 {
		p[i], p[i+1], p[i+2] = r, g, b
	}
	return p
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func newStore(t *testing.T, cfg SnapshotStoreConfig) (*SnapshotStore, *fakeClock) {
	t.Helper()
	clk := &fakeClock{time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Now = clk.now
	s, err := NewSnapshotStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func TestSnapshotSave(t *testing.T) {
	s, _ := newStore(t, SnapshotStoreConfig{})
	path, err := s.Save("front door", "front-1-12", 32, 16, solidRGB(32, 16, 200, 20, 20))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(s.Dir(), "front door", "front-1-12.jpg"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := jpeg.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 32 || b.Dy() != 16 {
		t.Errorf("JPEG is %v", b)
	}
	r, g, b, _ := img.At(5, 5).RGBA()
	if r>>8 < 180 || g>>8 > 50 || b>>8 > 50 {
		t.Errorf("pixel (%d %d %d), want about (200 20 20)", r>>8, g>>8, b>>8)
	}

	// A better frame of the same track replaces the file.
	if _, err := s.Save("front door", "front-1-12", 8, 8, solidRGB(8, 8, 0, 0, 255)); err != nil {
		t.Fatal(err)
	}
	n, size := s.Stats()
	info, _ := os.Stat(path)
	if n != 1 || size != info.Size() {
		t.Errorf("after replacing: %d files, %d bytes (file has %d)", n, size, info.Size())
	}

	// Names stay inside the folder; bad pictures are errors.
	p, err := s.Save("../up", "../../x", 2, 2, solidRGB(2, 2, 1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(p)) != s.Dir() || !strings.HasSuffix(p, ".jpg") {
		t.Errorf("path %s escapes %s", p, s.Dir())
	}
	if _, err := s.Save("c", "x", 4, 4, make([]byte, 10)); err == nil {
		t.Error("a short picture was saved")
	}
}

func TestSnapshotMaxCount(t *testing.T) {
	s, clk := newStore(t, SnapshotStoreConfig{MaxCount: 3})
	var paths []string
	for i, cam := range []string{"a", "b", "a", "b", "a"} {
		clk.t = clk.t.Add(time.Second)
		p, err := s.Save(cam, "id"+string(rune('0'+i)), 4, 4, solidRGB(4, 4, 9, 9, 9))
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	for i, p := range paths {
		if want := i >= 2; exists(p) != want {
			t.Errorf("snapshot %d exists %v, want %v", i, exists(p), want)
		}
	}
	if n, _ := s.Stats(); n != 3 {
		t.Errorf("%d kept, want 3", n)
	}
}

func TestSnapshotMaxAge(t *testing.T) {
	s, clk := newStore(t, SnapshotStoreConfig{MaxAge: 24 * time.Hour})
	old, _ := s.Save("a", "old", 4, 4, solidRGB(4, 4, 1, 1, 1))
	clk.t = clk.t.Add(20 * time.Hour)
	young, _ := s.Save("a", "young", 4, 4, solidRGB(4, 4, 1, 1, 1))
	clk.t = clk.t.Add(5 * time.Hour) // old is 25 h old, young 5 h
	if err := s.Prune(); err != nil {
		t.Fatal(err)
	}
	if exists(old) || !exists(young) {
		t.Errorf("after 25 h: old exists %v, young exists %v", exists(old), exists(young))
	}
	clk.t = clk.t.Add(20 * time.Hour)
	s.Prune()
	if exists(young) {
		t.Error("the last snapshot outlived MaxAge")
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("empty store reports %d files, %d bytes", n, b)
	}
}

func TestSnapshotMaxBytes(t *testing.T) {
	probe, _ := newStore(t, SnapshotStoreConfig{})
	p, _ := probe.Save("a", "probe", 16, 16, solidRGB(16, 16, 50, 100, 150))
	info, _ := os.Stat(p)
	one := info.Size()

	s, clk := newStore(t, SnapshotStoreConfig{MaxBytes: 2*one + one/2})
	var paths []string
	for _, id := range []string{"1", "2", "3", "4"} {
		clk.t = clk.t.Add(time.Second)
		p, err := s.Save("a", id, 16, 16, solidRGB(16, 16, 50, 100, 150))
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	if exists(paths[0]) || exists(paths[1]) || !exists(paths[2]) || !exists(paths[3]) {
		t.Errorf("want the 2 newest of 4 kept")
	}
	if n, b := s.Stats(); n != 2 || b != 2*one {
		t.Errorf("%d files, %d bytes; want 2, %d", n, b, 2*one)
	}

	// The newest stays even alone over the limit: an event refers to it.
	tiny, _ := newStore(t, SnapshotStoreConfig{MaxBytes: 1})
	p, _ = tiny.Save("a", "big", 16, 16, solidRGB(16, 16, 1, 2, 3))
	if !exists(p) {
		t.Error("the newest snapshot was removed")
	}
}

// A store opened on a folder with snapshots counts them (limits hold
// across restarts) and removes files a crash left half-written.
func TestSnapshotReopen(t *testing.T) {
	dir := t.TempDir()
	s, clk := newStore(t, SnapshotStoreConfig{Dir: dir})
	var paths []string
	for _, id := range []string{"1", "2", "3"} {
		clk.t = clk.t.Add(time.Second)
		p, _ := s.Save("cam", id, 4, 4, solidRGB(4, 4, 7, 7, 7))
		paths = append(paths, p)
	}
	stale := filepath.Join(dir, "cam", ".snap-123.tmp")
	os.WriteFile(stale, []byte("half"), 0o644)
	other := filepath.Join(dir, "cam", "notes.txt")
	os.WriteFile(other, []byte("keep"), 0o644)

	again, _ := newStore(t, SnapshotStoreConfig{Dir: dir, MaxCount: 2, MaxAge: -1})
	if n, _ := again.Stats(); n != 2 {
		t.Errorf("reopened store keeps %d, want 2", n)
	}
	if exists(paths[0]) || !exists(paths[1]) || !exists(paths[2]) {
		t.Error("reopening did not remove the oldest")
	}
	if exists(stale) || !exists(other) {
		t.Errorf("stale temp exists %v, unrelated file exists %v", exists(stale), exists(other))
	}
}

func TestSnapshotConfigErrors(t *testing.T) {
	if _, err := NewSnapshotStore(SnapshotStoreConfig{}); err == nil {
		t.Error("no folder: no error")
	}
	if _, err := NewSnapshotStore(SnapshotStoreConfig{Dir: t.TempDir(), Quality: 101}); err == nil {
		t.Error("quality 101: no error")
	}
}
