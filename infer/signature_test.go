package infer

import (
	"strings"
	"testing"
)

// The table the exporter also reads: a broken edit fails here, naming what
// is wrong, rather than as a signature mismatch on the first bundle.
func TestSignatureTableIsChecked(t *testing.T) {
	good := string(graphsYAML)
	bad := []struct{ from, to, says string }{
		{"[image, 4, float32]", "[image, 4, float16]", `image: element type "float16"`},
		{"[image, 4, float32]", "[image, four, float32]", `image: rank "four"`},
		{"[labels, 1, int64]", "[labels, int64]", "is not [name, rank, type]"},
		{"mask_heads:\n", "mask_head:\n", "no mask_heads signature"},
		{"bbox_stage:\n  inputs:", "bbox_stage:\n  input:", "input"},
	}
	for _, b := range bad {
		if !strings.Contains(good, b.from) {
			t.Fatalf("infer/graphs.yaml no longer has %q", b.from)
		}
		_, err := parseSignatures([]byte(strings.Replace(good, b.from, b.to, 1)))
		if err == nil || !strings.Contains(err.Error(), b.says) {
			t.Errorf("%q -> %q: %v, want an error saying %q", b.from, b.to, err, b.says)
		}
	}
	if _, err := parseSignatures([]byte(good + "extra:\n  inputs: []\n  outputs: []\n")); err == nil {
		t.Error("a graph kind the contract lacks was accepted")
	}
}

func TestOutputIndexFollowsTheTable(t *testing.T) {
	for _, kind := range []GraphKind{GraphBackbone, GraphBoxStage, GraphMaskHeads} {
		for i, p := range SignatureOf(kind).Outputs {
			if got := OutputIndex(kind, p.Name); got != i {
				t.Errorf("%s %s: index %d, want %d", kind, p.Name, got, i)
			}
		}
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), `no output "p7"`) {
			t.Errorf("an unknown output: %v", r)
		}
	}()
	OutputIndex(GraphBackbone, "p7")
}
