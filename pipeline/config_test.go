package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestSampleConfigIsTheDefault loads configs/pipeline/default.yaml: it must
// parse, validate, and say exactly what DefaultRunConfig says.
func TestSampleConfigIsTheDefault(t *testing.T) {
	c, err := LoadRunConfig("../configs/pipeline/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalise(c), normalise(DefaultRunConfig())) {
		t.Fatalf("default.yaml says\n%+v\nDefaultRunConfig says\n%+v", c, DefaultRunConfig())
	}
}

// normalise treats empty and nil lists alike.
func normalise(c RunConfig) RunConfig {
	if len(c.Model.TTAScales) == 0 {
		c.Model.TTAScales = nil
	}
	if len(c.Model.StageWeights) == 0 {
		c.Model.StageWeights = nil
	}
	if len(c.Sources) == 0 {
		c.Sources = nil
	}
	if len(c.WebRTC.ICEServers) == 0 {
		c.WebRTC.ICEServers = nil
	}
	return c
}

func TestRunConfigErrorsNameKeyAndFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ yaml, says string }{
		{"model:\n  bundel: x\n", "bundel"},
		{"batch:\n  size: 0\n", "batch.size 0"},
		{"live:\n  transport: quic\n", `live.transport "quic"`},
		{"model:\n  provider: npu\noverlay:\n  alpha: 2\n", "overlay.alpha 2"},
		{"batch:\n  deadline: soon\n", "soon"},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadRunConfig(p)
		if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), p) {
			t.Errorf("%q: got %v, want an error naming %s and %q", c.yaml, err, p, c.says)
		}
	}
	p := filepath.Join(dir, "empty.yaml")
	os.WriteFile(p, nil, 0o644)
	if _, err := LoadRunConfig(p); err != nil {
		t.Errorf("an empty file means the defaults: %v", err)
	}
}
