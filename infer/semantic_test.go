package infer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/htcstream/htcstream/internal/pyenv"
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
	graphs, err := filepath.Glob(filepath.Join(src, "*.onnx"))
	if err != nil || len(graphs) < 3 {
		t.Fatalf("example bundle (committed with the repo): graphs %v (%v)", graphs, err)
	}
	for _, f := range append([]string{"manifest.yaml"}, graphs...) {
		f = filepath.Base(f)
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatalf("example bundle (committed with the repo): %v", err)
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

// TestLoadBundleOfAPythonCOCOStuffExport exports a small model with the
// COCO-stuff semantic layout with the training module and loads it: the
// manifest Python writes is the one Go reads, and its 183 names match the
// graph's semantic_logits channels.
func TestLoadBundleOfAPythonCOCOStuffExport(t *testing.T) {
	dir := t.TempDir()
	script := `
import sys, torch
sys.path.insert(0, "tests")
from htc import export
from htc.model import build_model
from model_testutil import small_config
torch.manual_seed(0)
cfg = small_config(semantic_classes="cocostuff")
cfg.data.test_scale = [128, 128]
export.export_bundle(build_model(cfg).eval(), cfg, __import__("pathlib").Path(sys.argv[1]), name="cocostuff",
                     things=["a", "b", "c"], stuff=[], fixture_image=None, tta_scales=None)
`
	cmd := exec.Command(pyenv.Interpreter, "-W", "ignore", "-c", script, dir)
	cmd.Dir = "../training"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("exporting with the training module: %v\n%s", err, out)
	}
	b, err := LoadBundle(dir, SessionOptions{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m := b.Manifest
	names, stuff := m.SemanticClasses(), m.StuffChannels()
	if m.Semantic == nil || m.Semantic.Layout != LayoutCOCOStuff || len(names) != 183 || len(stuff) != 183 {
		t.Fatalf("semantic section %+v", m.Semantic)
	}
	if names[0] != "person" || names[11] != "street sign" || names[156] != "sky-other" || names[182] != "other" || !stuff[91] || stuff[90] {
		t.Errorf("names %q %q %q %q, stuff[90] %v stuff[91] %v", names[0], names[11], names[156], names[182], stuff[90], stuff[91])
	}
}

func TestLoadBundleChecksTheROISectionAgainstTheGraphs(t *testing.T) {
	dir := copyBundle(t)
	path := filepath.Join(dir, "manifest.yaml")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, to, says string }{
		{"channels: 64", "channels: 32", "has 64 channels"},
		{"size: 7\n", "size: 14\n", "roi_feats takes 3136"},
	} {
		m := strings.Replace(string(orig), c.from, c.to, 1)
		if m == string(orig) {
			t.Fatalf("example manifest has no %q", c.from)
		}
		if err := os.WriteFile(path, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadBundle(dir, SessionOptions{IntraOpThreads: 1})
		if !errors.Is(err, ErrBundle) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "manifest.yaml") {
			t.Errorf("%q -> %q: %v, want an error naming manifest.yaml and saying %q", c.from, c.to, err, c.says)
		}
	}
}
