package cascade

import (
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/htcstream/htcstream/infer"

	"github.com/htcstream/htcstream/internal/pyenv"
)

// TestSemanticMapMatchesGroundTruth generates two synthetic images with the
// training module (the data the default model learnt from, but unseen
// seeds) and compares the semantic map with their label PNGs: the branch
// must get most pixels right, and the map must follow a flip of the view.
func TestSemanticMapMatchesGroundTruth(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(pyenv.Interpreter, "-m", "htc.data.synthetic", "--out", dir, "--seed", "991", "--train", "0", "--val", "2")
	cmd.Dir = "../training"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("synthetic data: %v\n%s", err, out)
	}
	b, err := infer.LoadBundle(testBundle(t), infer.SessionOptions{IntraOpThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	plain, err := NewModel(b, Options{Semantic: true, SkipMasks: true})
	if err != nil {
		t.Fatal(err)
	}
	s := b.Manifest.Input.TestScales[0]
	flipped, err := NewModel(b, Options{Semantic: true, SkipMasks: true, Views: []infer.View{{Scale: infer.Scale{Long: s[0], Short: s[1]}, Flip: true}}})
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, "images", "val", "*.png"))
	if len(imgs) != 2 {
		t.Fatalf("%d images generated", len(imgs))
	}
	for _, p := range imgs {
		img := loadPNG(t, p)
		gt := loadLabels(t, filepath.Join(dir, "stuffthingmaps", "val", filepath.Base(p)))
		for name, md := range map[string]*Model{"plain": plain, "flipped view": flipped} {
			res, _, err := md.Detect([]Image{img})
			if err != nil {
				t.Fatal(err)
			}
			sem := res[0].Semantic
			if len(sem) != img.Width*img.Height {
				t.Fatalf("semantic map of %d pixels for a %dx%d frame", len(sem), img.Width, img.Height)
			}
			right, labelled := 0, 0
			for i, g := range gt {
				if g == 255 {
					continue
				}
				labelled++
				if sem[i] == g {
					right++
				}
			}
			acc := float64(right) / float64(labelled)
			t.Logf("%s, %s: pixel accuracy %.3f", filepath.Base(p), name, acc)
			if acc < 0.6 {
				t.Errorf("%s, %s: pixel accuracy %.3f", filepath.Base(p), name, acc)
			}
		}
	}
}

func loadLabels(t *testing.T, path string) []uint8 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	im, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	g, ok := im.(*image.Gray)
	if !ok {
		t.Fatalf("%s: %T, want 8-bit grey labels", path, im)
	}
	b := g.Bounds()
	out := make([]uint8, 0, b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		out = append(out, g.Pix[y*g.Stride:y*g.Stride+b.Dx()]...)
	}
	return out
}
