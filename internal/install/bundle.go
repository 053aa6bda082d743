package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// UnpackBundle writes the model bundle in fsys (a binary's embedded
// default) to the data folder, once per content: its folder is named by
// name and a hash of the files, so a newer binary's model never mixes with
// an older one's. ONNX Runtime loads graphs from paths, hence the files.
func UnpackBundle(fsys fs.FS, name string) (string, error) {
	sum, err := hashFS(fsys)
	if err != nil {
		return "", fmt.Errorf("embedded model %s: %w", name, err)
	}
	d, err := DataDir()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(d, "models", name+"-"+sum[:12])
	if _, err := os.Stat(filepath.Join(dst, "manifest.yaml")); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	// A folder appears whole or not at all: two runs starting together
	// each write their own and one rename wins.
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".unpack-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := os.CopyFS(tmp, fsys); err != nil {
		return "", fmt.Errorf("unpack the embedded model to %s: %w", dst, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(filepath.Join(dst, "manifest.yaml")); serr == nil {
			return dst, nil
		}
		return "", fmt.Errorf("unpack the embedded model to %s: %w", dst, err)
	}
	return dst, nil
}

func hashFS(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		f, err := fsys.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		io.WriteString(h, path+"\x00")
		_, err = io.Copy(h, f)
		return err
	})
	return hex.EncodeToString(h.Sum(nil)), err
}
