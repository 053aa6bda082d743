package record

import (
	"image/jpeg"
	"os"
	"os/exec"
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

// ffmpegJPEG writes a real photo-like JPEG (ffmpeg's test pattern) at path.
func ffmpegJPEG(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x48",
		"-frames:v", "1", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
}

// Issue 21 D1: snapshots.dir pointed at a folder of photos. Retention
// removes only the snapshots the store wrote, never a photo, even one in
// a folder named like a camera, named like a snapshot, old and over every
// limit, across restarts; its own old snapshots still go.
func TestSnapshotPruneKeepsFilesItDidNotWrite(t *testing.T) {
	dir := t.TempDir()
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	photos := []string{
		filepath.Join(dir, "album", "old.jpg"),         // the repro
		filepath.Join(dir, "front", "front-1-1.jpg"),   // a camera's folder, a snapshot's name
		filepath.Join(dir, "top.jpg"),                  // in dir itself
		filepath.Join(dir, "front", "sub", "deep.jpg"), // under a camera's folder
	}
	for _, p := range photos {
		ffmpegJPEG(t, p)
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	keptPhotos := func(when string) {
		t.Helper()
		for _, p := range photos {
			if !exists(p) {
				t.Errorf("%s: %s was removed", when, p)
			}
		}
	}

	// Opening applies the limits: the photos are older than MaxAge and
	// more than MaxCount.
	s, clk := newStore(t, SnapshotStoreConfig{Dir: dir, MaxCount: 2, MaxAge: 24 * time.Hour, MaxBytes: 1})
	keptPhotos("on opening")
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("a new store on a folder of photos counts %d files, %d bytes", n, b)
	}

	var own []string
	for i, cam := range []string{"front", "album", "front", "album"} {
		clk.t = clk.t.Add(time.Minute)
		p, err := s.Save(cam, cam+"-9-"+string(rune('0'+i)), 8, 8, solidRGB(8, 8, 9, 9, 9))
		if err != nil {
			t.Fatal(err)
		}
		own = append(own, p)
	}
	keptPhotos("after saves over the limits")
	// MaxBytes 1: only the newest of its own is kept.
	for i, p := range own {
		if want := i == len(own)-1; exists(p) != want {
			t.Errorf("own snapshot %d exists %v, want %v", i, exists(p), want)
		}
	}

	// Reopened a day later: its own last snapshot is over MaxAge and goes,
	// the photos stay.
	clk.t = clk.t.Add(48 * time.Hour)
	again, err := NewSnapshotStore(SnapshotStoreConfig{Dir: dir, MaxAge: 24 * time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	if exists(own[len(own)-1]) {
		t.Error("the reopened store kept its own snapshot past MaxAge")
	}
	if n, _ := again.Stats(); n != 0 {
		t.Errorf("reopened store counts %d files, want 0", n)
	}
	keptPhotos("after reopening")
}

// An edited manifest cannot make the store remove files outside its
// folders' shape.
func TestSnapshotManifestOnlyOwnShape(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "x.jpg")
	ffmpegJPEG(t, outside)
	deep := filepath.Join(dir, "cam", "sub", "y.jpg")
	ffmpegJPEG(t, deep)
	rel, _ := filepath.Rel(dir, outside)
	manifest := manifestHeader + "\n" + rel + "\ncam/sub/y.jpg\n/abs.jpg\n"
	if err := os.WriteFile(filepath.Join(dir, manifestName), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := newStore(t, SnapshotStoreConfig{Dir: dir, MaxCount: 0, MaxAge: time.Nanosecond})
	if n, _ := s.Stats(); n != 0 {
		t.Errorf("store adopted %d files from a manifest of foreign paths", n)
	}
	if !exists(outside) || !exists(deep) {
		t.Error("a foreign path in the manifest was removed")
	}
}
