package infer

import (
	"errors"
	"strings"
	"testing"
)

const quantSection = `quantization:
  scheme: qdq-u8s8
  graphs: [backbone, bbox_stages, mask_heads]
  calibration: min/max over 16 images
`

func TestManifestQuantizationSection(t *testing.T) {
	m, err := ReadManifest(writeBundle(t, validManifest+quantSection))
	if err != nil {
		t.Fatal(err)
	}
	if m.Quantization == nil || m.Quantization.Scheme != QuantSchemeQDQU8S8 || len(m.Quantization.Graphs) != 3 {
		t.Fatalf("quantization read as %+v", m.Quantization)
	}
	if m, err := ReadManifest(writeBundle(t, validManifest)); err != nil || m.Quantization != nil {
		t.Fatalf("a float bundle: %v, %+v", err, m)
	}
	bad := []struct{ from, to, says string }{
		{"qdq-u8s8", "fp16", `quantization.scheme "fp16"`},
		{"[backbone, bbox_stages, mask_heads]", "[]", "quantization.graphs is empty"},
		{"[backbone, bbox_stages, mask_heads]", "[backbone, heads]", `unknown graph "heads"`},
		{"[backbone, bbox_stages, mask_heads]", "[backbone, backbone]", `"backbone" twice`},
		{"calibration:", "calibrated:", "calibrated"},
	}
	for _, b := range bad {
		_, err := ReadManifest(writeBundle(t, validManifest+strings.Replace(quantSection, b.from, b.to, 1)))
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), b.says) {
			t.Errorf("%q -> %q: got %v, want an error saying %q", b.from, b.to, err, b.says)
		}
	}
}

// The box graphs are quantised as one group, bbox_stages; the retired
// contract's bbox_heads, or one stage, is not a group.
func TestManifestQuantizationGroups(t *testing.T) {
	for _, g := range []string{"bbox_heads", "bbox_stage1"} {
		_, err := ReadManifest(writeBundle(t, validManifest+strings.Replace(quantSection, "bbox_stages", g, 1)))
		want := `quantization.graphs: unknown graph "` + g + `" (want backbone, bbox_stages, mask_heads)`
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("got %v, want one line saying %q", err, want)
		}
	}
}
