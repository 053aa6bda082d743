package infer

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestScalesFromFlagsAndYAMLAreOne(t *testing.T) {
	for _, in := range []string{"1333x800", "800X1333", " 1333 x 800 "} {
		s, err := ParseScale(in)
		if err != nil || s != (Scale{1333, 800}) {
			t.Errorf("%q: %v, %v", in, s, err)
		}
	}
	var doc struct{ A, B Scale }
	if err := yaml.Unmarshal([]byte("a: 800x1333\nb: [480, 800]\n"), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.A != (Scale{1333, 800}) || doc.B != (Scale{800, 480}) {
		t.Errorf("yaml: %+v", doc)
	}
	for in, says := range map[string]string{
		"100000x100000": "above 4096", "big": "LONGxSHORT", "0x5": "positive", "2.5x3": "whole numbers",
	} {
		if _, err := ParseScale(in); err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: %v, want %q", in, err, says)
		}
	}
	if err := yaml.Unmarshal([]byte("a: [1, 2, 3]\n"), &doc); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("triple: %v", err)
	}
	if got, _ := ParseScales("800x480,1040x624"); len(got) != 2 || got[1].String() != "1040x624" {
		t.Errorf("list: %v", got)
	}
}
