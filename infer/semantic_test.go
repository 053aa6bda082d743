package infer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cocoStuffSection is a manifest semantic section in the COCO-stuff layout
// with n channel names and the stuff channels first..n-1.
func cocoStuffSection(layout string, n, first int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("c%d", i)
	}
	names[0], names[91], names[n-1] = "person", "banner", "other"
	var stuff []string
	for c := first; c < n; c++ {
		stuff = append(stuff, fmt.Sprint(c))
	}
	return fmt.Sprintf("semantic:\n  layout: %s\n  classes: [%s]\n  stuff: [%s]\n",
		layout, strings.Join(names, ", "), strings.Join(stuff, ", "))
}

// withSemantic replaces validManifest's stuff list by a semantic section.
func withSemantic(section string) string {
	return strings.Replace(validManifest, "stuff: [s]\n", section, 1)
}

func TestManifestCOCOStuffLayout(t *testing.T) {
	m, err := ReadManifest(writeBundle(t, withSemantic(cocoStuffSection(LayoutCOCOStuff, 183, 91))))
	if err != nil {
		t.Fatal(err)
	}
	names, stuff := m.SemanticClasses(), m.StuffChannels()
	if len(names) != 183 || names[0] != "person" || names[91] != "banner" || names[182] != "other" {
		t.Fatalf("semantic classes %v", names)
	}
	if len(stuff) != 183 || stuff[0] || stuff[90] || !stuff[91] || !stuff[182] {
		t.Fatalf("stuff channels %v", stuff)
	}
	// Thing channels are not "the first len(things)": things here are 2.
	if m.StuffChannels()[2] {
		t.Error("channel 2 is a thing channel in the COCO-stuff layout")
	}
}

func TestManifestOldLayoutIsThingsThenStuff(t *testing.T) {
	m, err := ReadManifest(writeBundle(t, validManifest))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.SemanticClasses(); strings.Join(got, ",") != "a,b,s" {
		t.Errorf("semantic classes %v", got)
	}
	if got := m.StuffChannels(); fmt.Sprint(got) != "[false false true]" {
		t.Errorf("stuff channels %v", got)
	}
}

func TestManifestCustomLayout(t *testing.T) {
	m, err := ReadManifest(writeBundle(t, withSemantic("semantic:\n  layout: custom\n  classes: [road, a, sky, b]\n  stuff: [0, 2]\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.StuffChannels(); fmt.Sprint(got) != "[true false true false]" {
		t.Errorf("stuff channels %v", got)
	}
}

func TestManifestSemanticErrors(t *testing.T) {
	bad := []struct{ manifest, says string }{
		{withSemantic(cocoStuffSection(LayoutCOCOStuff, 182, 91)), "semantic.classes has 182 names, the cocostuff layout has 183 channels"},
		{withSemantic(cocoStuffSection(LayoutCOCOStuff, 183, 92)), "semantic.stuff must be channels 91-182"},
		{withSemantic(cocoStuffSection("coco", 183, 91)), `semantic.layout "coco"`},
		{withSemantic("semantic:\n  layout: custom\n  classes: []\n"), "semantic.classes is empty"},
		{withSemantic("semantic:\n  layout: custom\n  classes: [a, b]\n  stuff: [1, 1]\n"), "semantic.stuff[1] = 1"},
		{withSemantic("semantic:\n  layout: custom\n  classes: [a, b]\n  stuff: [2]\n"), "semantic.stuff[0] = 2"},
		{withSemantic("semantic:\n  layout: custom\n  classes: [a, '']\n"), "semantic.classes[1] is empty"},
		{strings.Replace(validManifest, "stuff: [s]\n", "stuff: [s]\nsemantic:\n  layout: custom\n  classes: [a]\n", 1), "stuff and semantic are both given"},
	}
	for _, b := range bad {
		_, err := ReadManifest(writeBundle(t, b.manifest))
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), b.says) || !strings.Contains(err.Error(), "manifest.yaml") {
			t.Errorf("got %v, want an error naming manifest.yaml and %q", err, b.says)
		}
		if err != nil && strings.Count(err.Error(), "\n") > 0 {
			t.Errorf("error of more than one line: %q", err)
		}
	}
}

// copyBundle copies the example bundle into a temporary folder.
func copyBundle(t *testing.T) string {
	t.Helper()
	src := "../examples/models/htc_tiny_synthetic"
	dir := t.TempDir()
	for _, f := range []string{"manifest.yaml", "backbone.onnx", "bbox_heads.onnx", "mask_heads.onnx"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Skipf("example bundle: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadBundleChecksSemanticChannelCount(t *testing.T) {
	dir := copyBundle(t)
	b, err := LoadBundle(dir, SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	names := b.Manifest.SemanticClasses()
	b.Close()
	if len(names) != 9 || names[5] != "sky" {
		t.Fatalf("example bundle's semantic classes %v", names)
	}
	path := filepath.Join(dir, "manifest.yaml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		section string
		ok      bool
	}{
		{"semantic:\n  layout: custom\n  classes: [circle, square, triangle, star, ring, sky, grass, water, wall]\n  stuff: [5, 6, 7, 8]\n", true},
		{"semantic:\n  layout: custom\n  classes: [circle, square, triangle, star, ring, sky, grass, water]\n  stuff: [5, 6, 7]\n", false},
	} {
		m := strings.Replace(string(orig), "stuff: [sky, grass, water, wall]\n", c.section, 1)
		if m == string(orig) {
			t.Fatal("example manifest has no stuff line to replace")
		}
		if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := LoadBundle(dir, SessionOptions{IntraOpThreads: 1})
		if c.ok {
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			continue
		}
		want := "semantic.classes names 8 semantic classes but backbone.onnx's semantic_logits has 9 channels"
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}
