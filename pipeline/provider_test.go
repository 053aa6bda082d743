package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/infer"
)

// TestProviderKey: model.provider takes cpu, cuda[:N] and tensorrt[:N];
// anything else is an error naming the key and the value.
func TestProviderKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	for value, ok := range map[string]bool{"cpu": true, "cuda": true, "cuda:1": true, "tensorrt": true, "tensorrt:0": true,
		"gpu": false, "cuda:x": false, "cpu:0": false} {
		if err := os.WriteFile(p, []byte("model:\n  provider: "+value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRunConfig(p)
		if ok && err != nil {
			t.Errorf("provider %s: %v", value, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), `model.provider "`+value+`"`)) {
			t.Errorf("provider %s: got %v, want an error naming model.provider and the value", value, err)
		}
	}
}

// TestOpenBundleChecksTheProviderFirst: with the CPU build of ONNX Runtime,
// asking for CUDA fails before any graph is read, with the provider's error,
// not the bundle's.
func TestOpenBundleChecksTheProviderFirst(t *testing.T) {
	_, err := ModelSpec{Bundle: t.TempDir(), Provider: "cuda"}.OpenBundle()
	if !errors.Is(err, infer.ErrProvider) || errors.Is(err, infer.ErrBundle) {
		t.Fatalf("got %v, want the provider's error", err)
	}
}
