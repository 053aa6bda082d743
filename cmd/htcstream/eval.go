package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/htcstream/htcstream/cascade"
	"github.com/htcstream/htcstream/coco"
	"github.com/htcstream/htcstream/decode"
	"github.com/htcstream/htcstream/infer"
	"github.com/htcstream/htcstream/pipeline"
)

func evalCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "eval --data (INSTANCES.json | VIDEO.mp4) [flags]", stderr)
	var mf modelFlags
	mf.register(fs, 0)
	data := fs.String("data", "", "COCO instances JSON (images in --images), or a video with its ground truth beside it as .json")
	images := fs.String("images", "", "image folder of a COCO instances JSON (default: ROOT/images/SPLIT for ROOT/annotations/instances_SPLIT.json, else the JSON's folder)")
	out := fs.String("out", "", "write the stats (and the run's settings) as JSON here")
	results := fs.String("results", "", "also write the detections as a COCO results JSON here")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *data == "" || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("%w: want --data and no other arguments", errUsage)
	}
	gt, location, idOf, err := openEvalData(*data, *images)
	if err != nil {
		return err
	}
	b, md, err := mf.load()
	if err != nil {
		return err
	}
	defer b.Close()
	catIDs, err := categoryMap(gt, b.Manifest.Things)
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}

	var (
		dets  []coco.Detection
		tm    cascade.Timings
		start = time.Now()
		n     int
		done  atomic.Int64
	)
	progress := pipeline.StartProgress(stderr, &done, int64(len(gt.Images)))
	err = pipeline.ReadSource(context.Background(), location, 0, func(f *decode.Frame) error {
		id, ok := idOf(f)
		if !ok {
			return nil // a picture of the folder that the set does not list
		}
		img := cascade.Image{Width: f.Width, Height: f.Height, Pix: f.RGB, Order: infer.RGB}
		res, t, err := md.Detect([]cascade.Image{img})
		if err != nil {
			return fmt.Errorf("image %d: %w", id, err)
		}
		tm.Add(t)
		n++
		done.Add(1)
		for _, d := range res[0].Detections {
			rle, err := coco.EncodeRegion(d.Mask.X, d.Mask.Y, d.Mask.W, d.Mask.H, d.Mask.Bits, img.Width, img.Height)
			if err != nil {
				return fmt.Errorf("image %d: %w", id, err)
			}
			dets = append(dets, coco.Detection{
				ImageID: id, CategoryID: catIDs[d.Label], Score: float64(d.Score),
				BBox:         []float64{float64(d.Box.X1), float64(d.Box.Y1), float64(d.Box.Width()), float64(d.Box.Height())},
				Segmentation: &coco.Segmentation{RLE: &rle},
			})
		}
		return nil
	})
	progress()
	if err != nil {
		return err
	}
	if n < len(gt.Images) {
		// images it could not read count as found nothing: say so
		fmt.Fprintf(stderr, "htcstream eval: %d of the %d images of %s were read; the others count as missed\n", n, len(gt.Images), *data)
	}
	if n == 0 {
		return fmt.Errorf("%s: no images to evaluate", *data)
	}
	elapsed := time.Since(start)
	report := map[string]any{
		"model": mf.bundle, "data": *data, "images": n, "detections": len(dets),
		"views": len(md.Views()), "seconds_per_image": elapsed.Seconds() / float64(n),
	}
	for _, typ := range []coco.IoUType{coco.IoUBBox, coco.IoUSegm} {
		st, err := coco.Evaluate(gt, dets, typ)
		if err != nil {
			return fmt.Errorf("evaluate %s: %w", typ, err)
		}
		fmt.Fprintf(stdout, "Evaluate annotation type *%s*\n%s\n", typ, st)
		report[string(typ)] = st
	}
	fmt.Fprintf(stdout, "%d images, %d views each, %.1f ms/image (graphs %.1f ms, roi align %.1f ms, other Go steps %.1f ms)\n",
		n, len(md.Views()), ms(elapsed)/float64(n), ms(tm.Graph())/float64(n), ms(tm.RoIAlign)/float64(n), ms(tm.Go())/float64(n))
	if *results != "" {
		if err := writeJSON(*results, dets); err != nil {
			return err
		}
	}
	if *out != "" {
		if err := writeJSON(*out, report); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// categoryMap pairs the model's thing classes with the dataset's categories
// in id order (the training module's convention) and checks their names
// agree, so a model is never scored against another label set.
func categoryMap(gt *coco.Dataset, things []string) ([]int64, error) {
	cats := append([]coco.Category(nil), gt.Categories...)
	sort.Slice(cats, func(i, j int) bool { return cats[i].ID < cats[j].ID })
	if len(cats) != len(things) {
		return nil, fmt.Errorf("the dataset has %d categories, the model %d classes", len(cats), len(things))
	}
	ids := make([]int64, len(cats))
	for i, c := range cats {
		if c.Name != things[i] {
			return nil, fmt.Errorf("category %d is %q in the dataset but class %d is %q in the model", c.ID, c.Name, i, things[i])
		}
		ids[i] = c.ID
	}
	return ids, nil
}

// openEvalData opens a COCO instances JSON with its image folder, or a
// video with per-frame ground truth beside it (frame i is image id i+1).
// It returns the ground truth, where the frames are (a folder or the video)
// and how a frame is matched to its image id.
func openEvalData(data, images string) (*coco.Dataset, string, func(*decode.Frame) (int64, bool), error) {
	if strings.HasSuffix(strings.ToLower(data), ".json") {
		gt, err := coco.LoadDataset(data)
		if err != nil {
			return nil, "", nil, err
		}
		if images == "" {
			images = defaultImageDir(data)
		}
		if st, err := os.Stat(images); err != nil || !st.IsDir() {
			return nil, "", nil, fmt.Errorf("images of %s: %s is not a folder (--images)", data, images)
		}
		ids := make(map[string]int64, len(gt.Images))
		for _, im := range gt.Images {
			ids[filepath.Base(im.FileName)] = im.ID
		}
		return gt, images, func(f *decode.Frame) (int64, bool) {
			id, ok := ids[filepath.Base(f.Name)]
			return id, ok
		}, nil
	}
	gtPath := strings.TrimSuffix(data, filepath.Ext(data)) + ".json"
	gt, err := coco.LoadDataset(gtPath)
	if err != nil {
		return nil, "", nil, fmt.Errorf("ground truth of %s: %w", data, err)
	}
	if _, err := os.Stat(data); err != nil {
		return nil, "", nil, err
	}
	return gt, data, func(f *decode.Frame) (int64, bool) { return f.Seq + 1, true }, nil
}

// defaultImageDir follows the COCO layout ROOT/annotations/instances_SPLIT.json
// -> ROOT/images/SPLIT (the synthetic set's too), else the JSON's folder.
func defaultImageDir(ann string) string {
	dir, base := filepath.Split(ann)
	if split, ok := strings.CutPrefix(strings.TrimSuffix(base, ".json"), "instances_"); ok && filepath.Base(filepath.Clean(dir)) == "annotations" {
		return filepath.Join(filepath.Dir(filepath.Clean(dir)), "images", split)
	}
	return filepath.Clean(dir)
}
