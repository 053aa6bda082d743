// Package install knows where an installed htcstream keeps what it needs
// beside its binary (the ONNX Runtime library, the unpacked default model)
// and how `htcstream setup` puts the library there: a binary built with
// `go install` or copied to another folder has no project checkout around
// it to find them in.
package install

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

//go:embed onnxruntime.env
var pinned string

// Runtime is the ONNX Runtime release htcstream is tested against, and the
// sha1 of the npm package that ships its CPU library.
type Runtime struct {
	Version string
	// TgzSHA1 is the hex sha1 of onnxruntime-node-<Version>.tgz.
	TgzSHA1 string
}

// Pinned is the release in onnxruntime.env (scripts/setup reads the same
// file).
func Pinned() Runtime {
	var r Runtime
	sc := bufio.NewScanner(strings.NewReader(pinned))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		switch {
		case !ok || strings.HasPrefix(k, "#"):
		case k == "ort_version":
			r.Version = v
		case k == "ort_tgz_sha1":
			r.TgzSHA1 = v
		}
	}
	return r
}

// DataDir is where an installed htcstream keeps its files:
// $XDG_DATA_HOME/htcstream, else ~/.local/share/htcstream (the XDG base
// directory default).
func DataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "htcstream"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no data folder: neither XDG_DATA_HOME nor HOME is set")
	}
	return filepath.Join(home, ".local", "share", "htcstream"), nil
}

// libraryName is the file ONNX Runtime's Linux library goes by, in the
// project's third_party folder and in the data folder alike.
const libraryName = "libonnxruntime.so.1"

// LibraryPath is where `htcstream setup` puts the ONNX Runtime library.
func LibraryPath() (string, error) {
	d, err := DataDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "onnxruntime", "lib", libraryName), nil
}

// InstallLibrary copies the library at src into the data folder (through a
// temporary file and a rename, so a run starting meanwhile never loads half
// a library) and returns where it went.
func InstallLibrary(src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("onnxruntime library: %w", err)
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil || st.IsDir() {
		return "", fmt.Errorf("onnxruntime library: %s is not a file", src)
	}
	return writeLibrary(in)
}

func writeLibrary(r io.Reader) (string, error) {
	dst, err := LibraryPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".lib-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write %s: %w", dst, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// Exists says whether p is a file.
func Exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// tgzMember is the CPU library's path inside onnxruntime-node's package.
const tgzMember = "package/bin/napi-v6/linux/x64/" + libraryName

// ErrChecksum: the package fetched is not the one pinned.
var ErrChecksum = errors.New("checksum mismatch")

// FetchLibrary downloads onnxruntime-node-<rt.Version>.tgz from an npm
// registry (https://registry.npmjs.org when registry is ""), checks its
// sha1 against rt.TgzSHA1 before anything in it is used, and installs the
// CPU library from it. The package is ~90 MB; it is held in a temporary
// file, not in memory.
func FetchLibrary(ctx context.Context, registry string, rt Runtime) (string, error) {
	if registry == "" {
		registry = "https://registry.npmjs.org"
	}
	url := strings.TrimSuffix(registry, "/") + "/onnxruntime-node/-/onnxruntime-node-" + rt.Version + ".tgz"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("registry %q: %w", registry, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	tmp, err := os.CreateTemp("", "onnxruntime-node-*.tgz")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha1.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		return "", fmt.Errorf("fetch %s: %w", url, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != rt.TgzSHA1 {
		return "", fmt.Errorf("%w: onnxruntime-node-%s.tgz from %s has sha1 %s, want %s", ErrChecksum, rt.Version, registry, sum, rt.TgzSHA1)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	return installFromTgz(tmp, rt.Version)
}

func installFromTgz(r io.Reader, version string) (string, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return "", fmt.Errorf("onnxruntime-node-%s.tgz: %w", version, err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("onnxruntime-node-%s.tgz has no %s", version, tgzMember)
		}
		if err != nil {
			return "", fmt.Errorf("onnxruntime-node-%s.tgz: %w", version, err)
		}
		if hdr.Name == tgzMember && hdr.Typeflag == tar.TypeReg {
			return writeLibrary(tr)
		}
	}
}
