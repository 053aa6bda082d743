package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The --quantize flags are checked before anything runs (the pass itself is
// training/tests/test_quantize.py).
func TestExportQuantizeFlagsAreCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "m.pth")
	if err := os.WriteFile(ckpt, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b")
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"--quantize", "int4"}, `--quantize "int4"`},
		{[]string{"--quantize", "int8"}, "needs --calib-images"},
		{[]string{"--calib-images", dir}, "without --quantize"},
		{[]string{"--quantize", "int8", "--calib-images", ckpt}, "is not a folder"},
	} {
		code, _, errOut := call(append([]string{"export", "--checkpoint", ckpt, "--out", out}, c.args...)...)
		if code != 2 || !strings.Contains(errOut, c.says) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, errOut, c.says)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused export wrote %s", out)
	}
}
