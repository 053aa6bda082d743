package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const defaultBundle = "../../examples/models/htc_tiny_synthetic"

// writeContractOne writes a manifest of the retired contract 1 (one
// bbox_heads graph, no roi section) into a new folder: the default
// bundle's, as htc.export wrote it before issue 14.
func writeContractOne(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(defaultBundle, "manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(raw)
	m = strings.Replace(m, "contract: htcstream-bundle/2", "contract: htcstream-bundle/1", 1)
	m = strings.Replace(m, "  bbox_stages: [bbox_stage1.onnx, bbox_stage2.onnx, bbox_stage3.onnx]\n", "  bbox_heads: bbox_heads.onnx\n", 1)
	m = m[:strings.Index(m, "roi:\n")]
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A contract-1 bundle stops the command on one line that names its manifest
// and says how to convert it.
func TestContractOneBundleSaysHowToConvert(t *testing.T) {
	dir := writeContractOne(t)
	code, _, errOut := call("bench", "--model", dir, "--frames", "1", "../../examples/sample.mp4")
	line := strings.TrimSpace(errOut)
	if code == 0 || strings.Contains(line, "\n") || !strings.Contains(line, filepath.Join(dir, "manifest.yaml")) ||
		!strings.Contains(line, "htcstream export --from-bundle "+dir) {
		t.Fatalf("exit %d, stderr %q: want one line naming the manifest and htcstream export --from-bundle", code, errOut)
	}
}

func TestExportFromBundleFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--from-bundle", defaultBundle, "--out", dir}, "--from-bundle needs --config"},
		{[]string{"--from-bundle", defaultBundle, "--checkpoint", "x.pth", "--config", "c.yaml", "--out", dir}, "not both"},
		{[]string{"--from-bundle", defaultBundle, "--config", "../../configs/model/htc_tiny.yaml", "--out", dir, "--name", "n"}, "keeps the bundle's name"},
		{[]string{"--from-bundle", filepath.Join(dir, "none"), "--config", "../../configs/model/htc_tiny.yaml", "--out", dir}, "--from-bundle: "},
	} {
		code, _, errOut := call(append([]string{"export"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.says) {
			t.Errorf("%v: exit %d, %q; want an error saying %q", c.args, code, errOut, c.says)
		}
	}
}

// TestExportFromBundle rewrites the default bundle from the weights in its
// own graphs through the CLI: the same weights give the same files.
func TestExportFromBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("exports with PyTorch (not under -short)")
	}
	out := filepath.Join(t.TempDir(), "rebuilt")
	code, stdout, errOut := call("export", "--from-bundle", defaultBundle, "--config", "../../configs/model/htc_tiny.yaml", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, errOut)
	}
	files, err := filepath.Glob(filepath.Join(defaultBundle, "*.*"))
	if err != nil || len(files) != 6 {
		t.Fatalf("default bundle files %v (%v)", files, err)
	}
	for _, f := range append(files, filepath.Join(defaultBundle, "fixture", "fixture.yaml")) {
		rel, _ := filepath.Rel(defaultBundle, f)
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from the default bundle's (%v)", rel, err)
		}
	}
}
