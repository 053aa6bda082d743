package install

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

func TestPinnedNamesARelease(t *testing.T) {
	rt := Pinned()
	if !strings.HasPrefix(rt.Version, "1.") || len(rt.TgzSHA1) != 40 {
		t.Fatalf("onnxruntime.env gives %+v", rt)
	}
	// scripts/setup reads the same file rather than its own copy
	b, err := os.ReadFile("../../scripts/setup")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "internal/install/onnxruntime.env") || strings.Contains(string(b), "ort_version="+rt.Version) {
		t.Fatalf("scripts/setup should source internal/install/onnxruntime.env, not restate the version")
	}
}

func tgz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// FetchLibrary against a registry on loopback: the package's sha1 is
// checked before the library is taken out of it, and a package that is not
// the pinned one installs nothing.
func TestFetchLibraryChecksThePackage(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	pkg := tgz(t, map[string]string{"package/README.md": "x", tgzMember: "ELF library bytes"})
	sum := sha1.Sum(pkg)
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path
		w.Write(pkg)
	}))
	defer srv.Close()

	_, err := FetchLibrary(context.Background(), srv.URL, Runtime{Version: "9.9.9", TgzSHA1: strings.Repeat("0", 40)})
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong sha1: %v", err)
	}
	dst, _ := LibraryPath()
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a package with the wrong sha1 installed %s", dst)
	}
	got, err := FetchLibrary(context.Background(), srv.URL+"/", Runtime{Version: "9.9.9", TgzSHA1: hex.EncodeToString(sum[:])})
	if err != nil {
		t.Fatal(err)
	}
	if asked != "/onnxruntime-node/-/onnxruntime-node-9.9.9.tgz" {
		t.Errorf("asked the registry for %s", asked)
	}
	if b, _ := os.ReadFile(got); got != dst || string(b) != "ELF library bytes" {
		t.Fatalf("installed %s: %q", got, b)
	}

	empty := tgz(t, map[string]string{"package/README.md": "x"})
	esum := sha1.Sum(empty)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(empty) })
	if _, err := FetchLibrary(context.Background(), srv.URL, Runtime{Version: "9.9.9", TgzSHA1: hex.EncodeToString(esum[:])}); err == nil || !strings.Contains(err.Error(), tgzMember) {
		t.Fatalf("a package without the library: %v", err)
	}
}

// The embedded model is unpacked once per content; runs starting together
// each get the whole folder.
func TestUnpackBundleOncePerContent(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	fsys := fstest.MapFS{"manifest.yaml": {Data: []byte("name: m\n")}, "a.onnx": {Data: []byte("graph")}}
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	errs := make([]error, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = UnpackBundle(fsys, "m")
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Fatalf("unpack %d: %q %v (first %q)", i, dirs[i], errs[i], dirs[0])
		}
	}
	if b, err := os.ReadFile(filepath.Join(dirs[0], "a.onnx")); err != nil || string(b) != "graph" {
		t.Fatalf("a.onnx: %q %v", b, err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dirs[0]), ".unpack-*"))
	if len(leftovers) != 0 {
		t.Fatalf("temporary folders left: %v", leftovers)
	}
	fsys["a.onnx"] = &fstest.MapFile{Data: []byte("another graph")}
	if d, err := UnpackBundle(fsys, "m"); err != nil || d == dirs[0] {
		t.Fatalf("changed content should get its own folder: %q %v", d, err)
	}
}
