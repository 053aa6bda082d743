package record

import (
	"bytes"
	"errors"
	"fmt"
	"image/jpeg"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/htcstream/htcstream/stream/encode"
)

// SnapshotStoreConfig configures a SnapshotStore. Every field but Dir has
// a default; a negative limit turns that limit off.
type SnapshotStoreConfig struct {
	// Dir holds a folder per camera with the JPEGs; created when missing.
	// Required.
	Dir string
	// MaxCount bounds the number of snapshots kept (all cameras); default
	// 1000.
	MaxCount int
	// MaxAge is how long a snapshot is kept after it was last written;
	// default 7 days.
	MaxAge time.Duration
	// MaxBytes bounds the snapshots' total size; default 1 GiB.
	MaxBytes int64
	// Quality is the JPEG quality, 1-100; default 85.
	Quality int
	// Now is the clock for ages and file times; default time.Now.
	Now func() time.Time
}

func (c *SnapshotStoreConfig) setDefaults() {
	if c.MaxCount == 0 {
		c.MaxCount = 1000
	}
	if c.MaxAge == 0 {
		c.MaxAge = 7 * 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.Quality == 0 {
		c.Quality = 85
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// snapFile is one snapshot the store keeps.
type snapFile struct {
	path string
	size int64
	mod  time.Time
}

// SnapshotStore writes the JPEG of a tracked object's best frame under
// <Dir>/<camera>/<id>.jpg and keeps the folder within its limits (count,
// age, bytes), removing the oldest snapshots first. The newest snapshot is
// always kept, even alone over MaxBytes, since an event refers to it.
//
// It only ever removes files it wrote: those listed in its manifest,
// <Dir>/.htcstream-snapshots. Dir may be a folder that holds other
// pictures (a photo album, another program's JPEGs): a name or a place
// that merely looks like a snapshot's is not proof the store made it.
// A path goes into the manifest before its file is renamed into place,
// so a crash leaves at worst a listed path with no file, dropped when
// the store is next opened, never a snapshot it forgets.
//
// Save encodes and writes a file: call it from a sink's goroutine, never
// on inference's path. Its methods are safe from several goroutines.
type SnapshotStore struct {
	cfg SnapshotStoreConfig

	mu    sync.Mutex
	files []snapFile // oldest first
	bytes int64
}

// NewSnapshotStore makes Dir if needed, takes in the snapshots already
// there (so limits hold across restarts) and applies the limits.
func NewSnapshotStore(cfg SnapshotStoreConfig) (*SnapshotStore, error) {
	cfg.setDefaults()
	if cfg.Dir == "" {
		return nil, errors.New("snapshots: no folder")
	}
	if cfg.Quality < 1 || cfg.Quality > 100 {
		return nil, fmt.Errorf("snapshots: JPEG quality %d: want 1-100", cfg.Quality)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	s := &SnapshotStore{cfg: cfg}
	if err := s.load(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(s.files, func(a, b snapFile) int { return a.mod.Compare(b.mod) })
	if err := s.Prune(); err != nil {
		return nil, err
	}
	return s, nil
}

// manifestName is the file in Dir listing, oldest first, the snapshots the
// store wrote, one path relative to Dir per line.
const manifestName = ".htcstream-snapshots"

const manifestHeader = "# htcstream snapshot store: the files listed here are pruned by age, count and size; nothing else in this folder is touched"

// load reads the manifest (none: a new store), keeps its entries that are
// still the store's files, and removes temporaries a crash left in the
// folders the store writes.
func (s *SnapshotStore) load() error {
	data, err := os.ReadFile(filepath.Join(s.cfg.Dir, manifestName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshots: %w", err)
	}
	seen := map[string]bool{}
	cams := map[string]bool{}
	for line := range strings.Lines(string(data)) {
		rel := strings.TrimRight(line, "\r\n")
		if rel == "" || strings.HasPrefix(rel, "#") || seen[rel] {
			continue
		}
		cam, file, ok := strings.Cut(rel, "/")
		// Only the shape SaveJPEG writes: an edited manifest must not
		// reach outside Dir or into a camera folder's subfolders.
		if !ok || cam != fileName(cam) || file != fileName(file) || strings.Contains(file, "/") ||
			!strings.HasSuffix(file, ".jpg") {
			continue
		}
		seen[rel] = true
		p := filepath.Join(s.cfg.Dir, cam, file)
		info, err := os.Lstat(p)
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		cams[cam] = true
		s.files = append(s.files, snapFile{p, info.Size(), info.ModTime()})
		s.bytes += info.Size()
	}
	for cam := range cams {
		ents, _ := os.ReadDir(filepath.Join(s.cfg.Dir, cam))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) && strings.HasSuffix(e.Name(), ".tmp") && e.Type().IsRegular() {
				os.Remove(filepath.Join(s.cfg.Dir, cam, e.Name())) // left by a crash mid-write
			}
		}
	}
	return nil
}

// tempPrefix starts the name of a snapshot being written.
const tempPrefix = ".snap-"

// writeManifestLocked lists s.files, plus extra when not empty, in the
// manifest. It replaces the file whole (written aside, then renamed), so
// a crash leaves the old list or the new one.
func (s *SnapshotStore) writeManifestLocked(extra string) error {
	var b strings.Builder
	b.WriteString(manifestHeader)
	b.WriteByte('\n')
	for _, f := range s.files {
		if f.path == extra {
			continue
		}
		b.WriteString(s.relLocked(f.path))
		b.WriteByte('\n')
	}
	if extra != "" {
		b.WriteString(s.relLocked(extra))
		b.WriteByte('\n')
	}
	tmp, err := os.CreateTemp(s.cfg.Dir, manifestName+".*.tmp")
	if err != nil {
		return fmt.Errorf("snapshots: manifest: %w", err)
	}
	_, werr := tmp.WriteString(b.String())
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Rename(tmp.Name(), filepath.Join(s.cfg.Dir, manifestName))); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("snapshots: manifest: %w", err)
	}
	return nil
}

// relLocked is path relative to Dir with a forward slash, as listed.
func (s *SnapshotStore) relLocked(path string) string {
	rel, _ := filepath.Rel(s.cfg.Dir, path)
	return filepath.ToSlash(rel)
}

// Dir is the store's folder.
func (s *SnapshotStore) Dir() string { return s.cfg.Dir }

// fileName makes s one safe path element: no separators, no leading dot.
func fileName(s string) string {
	n := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == 0 || r < ' ' {
			return '_'
		}
		return r
	}, s)
	n = strings.TrimLeft(n, ".")
	if n == "" {
		return "_"
	}
	return n
}

// Save writes a w x h picture of packed RGB24 (len(rgb) = w*h*3, rows top
// to bottom) as <Dir>/<camera>/<id>.jpg, replacing an earlier snapshot of
// the same id (a better frame of the same track), then applies the limits.
// It returns the file's path, which the event references. The file
// appears whole or not at all (written aside, then renamed). It is Encode
// then SaveJPEG.
func (s *SnapshotStore) Save(camera, id string, w, h int, rgb []byte) (string, error) {
	jpg, err := s.Encode(w, h, rgb)
	if err != nil {
		return "", fmt.Errorf("snapshot of %s/%s: %w", camera, id, err)
	}
	return s.SaveJPEG(camera, id, jpg)
}

// Encode makes the JPEG of a w x h picture of packed RGB24 at the store's
// quality, for SaveJPEG: one frame that is the best of several tracks is
// encoded once.
func (s *SnapshotStore) Encode(w, h int, rgb []byte) ([]byte, error) {
	if w <= 0 || h <= 0 || len(rgb) != w*h*3 {
		return nil, fmt.Errorf("%d bytes for %dx%d RGB, want %d", len(rgb), w, h, max(w*h*3, 0))
	}
	img := encode.RGBImage(w, h, rgb)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: s.cfg.Quality}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SaveJPEG is Save for a picture Encode made.
func (s *SnapshotStore) SaveJPEG(camera, id string, jpg []byte) (string, error) {
	dir := filepath.Join(s.cfg.Dir, fileName(camera))
	path := filepath.Join(dir, fileName(id)+".jpg")

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	// Listed before it exists: a crash between the two leaves a path
	// with no file, not a file the store no longer knows it wrote.
	if err := s.writeManifestLocked(path); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*.tmp")
	if err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	_, werr := tmp.Write(jpg)
	cerr := tmp.Close()
	now := s.cfg.Now()
	if err := errors.Join(werr, cerr, os.Chtimes(tmp.Name(), now, now), os.Rename(tmp.Name(), path)); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("snapshot %s: %w", path, err)
	}
	if i := slices.IndexFunc(s.files, func(f snapFile) bool { return f.path == path }); i >= 0 {
		s.bytes -= s.files[i].size
		s.files = slices.Delete(s.files, i, i+1)
	}
	s.files = append(s.files, snapFile{path, int64(len(jpg)), now})
	s.bytes += int64(len(jpg))
	return path, s.pruneLocked()
}

// Prune applies the limits now. Save does after each snapshot; call it
// also from time to time so the age limit holds while nothing is saved.
func (s *SnapshotStore) Prune() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pruneLocked()
}

func (s *SnapshotStore) pruneLocked() error {
	var errs []error
	cutoff := s.cfg.Now().Add(-s.cfg.MaxAge)
	n := 0 // how many of the oldest go
	for n < len(s.files)-1 {
		f := s.files[n]
		over := s.cfg.MaxCount >= 0 && len(s.files)-n > s.cfg.MaxCount ||
			s.cfg.MaxBytes >= 0 && s.bytes > s.cfg.MaxBytes ||
			s.cfg.MaxAge >= 0 && f.mod.Before(cutoff)
		if !over {
			break
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.bytes -= f.size
		n++
	}
	// The newest goes too when it is over the age limit, which only
	// Prune, not Save, can meet.
	if n == len(s.files)-1 && s.cfg.MaxAge >= 0 && s.files[n].mod.Before(cutoff) {
		if err := os.Remove(s.files[n].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.bytes -= s.files[n].size
		n++
	}
	s.files = slices.Delete(s.files, 0, n)
	if n > 0 {
		errs = append(errs, s.writeManifestLocked(""))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("snapshots: prune: %w", err)
	}
	return nil
}

// Stats returns the number of snapshots kept and their total size.
func (s *SnapshotStore) Stats() (count int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files), s.bytes
}
