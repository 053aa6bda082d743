package infer

import (
	"errors"
	"strings"
	"testing"
)

const quantSection = `quantization:
  scheme: qdq-u8s8
  graphs: [backbone, bbox_heads, mask_heads]
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
		{"[backbone, bbox_heads, mask_heads]", "[]", "quantization.graphs is empty"},
		{"[backbone, bbox_heads, mask_heads]", "[backbone, heads]", `unknown graph "heads"`},
		{"[backbone, bbox_heads, mask_heads]", "[backbone, backbone]", `"backbone" twice`},
		{"calibration:", "calibrated:", "calibrated"},
	}
	for _, b := range bad {
		_, err := ReadManifest(writeBundle(t, validManifest+strings.Replace(quantSection, b.from, b.to, 1)))
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), b.says) {
			t.Errorf("%q -> %q: got %v, want an error saying %q", b.from, b.to, err, b.says)
		}
	}
}

// A contract-2 bundle's box graphs are the stage graphs, quantised as one
// group, bbox_stages; bbox_heads is contract 1's alone.
func TestManifestQuantizationGroupsFollowTheContract(t *testing.T) {
	v2 := strings.Replace(quantSection, "bbox_heads", "bbox_stages", 1)
	m, err := ReadManifest(writeBundle(t, validManifestV2+v2))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Quantization.Graphs, ","); got != "backbone,bbox_stages,mask_heads" {
		t.Fatalf("quantization.graphs read as %s", got)
	}
	bad := []struct{ manifest, section, says string }{
		{validManifestV2, quantSection, `quantization.graphs: "bbox_heads" is not a graph of contract htcstream-bundle/2 (its box graphs are bbox_stages)`},
		{validManifest, v2, `quantization.graphs: "bbox_stages" is not a graph of contract htcstream-bundle/1 (its box graphs are bbox_heads)`},
		{validManifestV2, strings.Replace(v2, "bbox_stages", "bbox_stage1", 1), `unknown graph "bbox_stage1" (want backbone, bbox_stages, mask_heads)`},
	}
	for _, b := range bad {
		_, err := ReadManifest(writeBundle(t, b.manifest+b.section))
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), b.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("got %v, want one line saying %q", err, b.says)
		}
	}
}
