package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/htcstream/htcstream/pipeline"
	"github.com/spf13/pflag"
)

// checkpointFlags are what export and import share: the checkpoint (ours or
// mmdetection's), an optional config whose keys override what the checkpoint
// says, and --set overrides. Export also takes a bundle instead of the
// checkpoint (fromBundle, nil for import).
type checkpointFlags struct {
	ckpt, out, config *string
	fromBundle        *string
	sets              []string
}

func (c *checkpointFlags) register(fs *pflag.FlagSet, outHelp string) {
	c.ckpt = fs.String("checkpoint", "", "htc.train checkpoint, or a released mmdetection HTC .pth (2.x or 2019 v1 layout)")
	c.out = fs.String("out", "", outHelp)
	c.config = fs.String("config", "", "YAML whose keys override the checkpoint's config (for mmdetection files: what the weights' shapes say)")
	fs.StringArrayVar(&c.sets, "set", nil, "override one config value, KEY=VALUE (repeatable), e.g. --set data.test_scale=[800,480]")
}

// parse parses args and returns the training folder and the Python
// arguments the shared flags make; usage is what to say when --checkpoint
// or --out is missing (or, without extra arguments allowed, anything else
// is given).
func (c *checkpointFlags) parse(fs *pflag.FlagSet, args []string, allowExtra bool, usage string) (string, []string, error) {
	if err := parseFlags(fs, args); err != nil {
		return "", nil, err
	}
	bundle := c.fromBundle != nil && *c.fromBundle != ""
	switch {
	case bundle && *c.ckpt != "":
		return "", nil, fmt.Errorf("%w: give --checkpoint or --from-bundle, not both", errUsage)
	case bundle && *c.config == "":
		return "", nil, fmt.Errorf("%w: --from-bundle needs --config, the model config the bundle was exported from", errUsage)
	case (*c.ckpt == "" && !bundle) || *c.out == "" || (!allowExtra && fs.NArg() > 0):
		fs.Usage()
		return "", nil, fmt.Errorf("%w: %s", errUsage, usage)
	}
	root, err := trainingDir()
	if err != nil {
		return "", nil, err
	}
	pargs, err := c.pythonArgs()
	return root, pargs, err
}

// pythonArgs checks the paths and turns them absolute: Python runs in training/.
func (c *checkpointFlags) pythonArgs() ([]string, error) {
	flag, src := "--checkpoint", *c.ckpt
	if c.fromBundle != nil && *c.fromBundle != "" {
		flag, src = "--from-bundle", *c.fromBundle
	}
	src, err := filepath.Abs(src)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	out, err := filepath.Abs(*c.out)
	if err != nil {
		return nil, err
	}
	args := []string{flag, src, "--out", out}
	if *c.config != "" {
		cfg, err := filepath.Abs(*c.config)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(cfg); err != nil {
			return nil, fmt.Errorf("--config: %w", err)
		}
		args = append(args, "--config", cfg)
	}
	for _, s := range c.sets {
		args = append(args, "--set", s)
	}
	return args, nil
}

func exportCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", "export --checkpoint CKPT --out BUNDLE [flags] [-- exporter flags]\n"+
		"       htcstream export --from-bundle OLD --config CFG --out BUNDLE", stderr)
	var c checkpointFlags
	c.register(fs, "bundle directory to write")
	c.fromBundle = fs.String("from-bundle", "", "instead of --checkpoint: a bundle whose head graphs are exported again from the weights in them (a contract-1 bundle becomes contract 2); needs --config")
	name := fs.String("name", "", "the bundle's name in its manifest (default: from the checkpoint's file)")
	fixture := fs.String("fixture-image", "", "image for the reference fixture the Go parity test reads (default: the first val image; none for an mmdetection checkpoint)")
	noFixture := fs.Bool("no-fixture", false, "write no reference fixture")
	tta := fs.String("tta-scales", "", "the fixture's TTA plan, LONGxSHORT,LONGxSHORT (default: the test scale and 1.3x it)")
	quant := fs.String("quantize", "", "int8: write INT8 (QDQ) graphs calibrated on --calib-images instead of float ones (measured: the R-50 uses 2.6-2.9x less CPU at 800x480 and 1333x800, 2.5x with DCN; the default bundle keeps its AP; docs/benchmarks.md, \"INT8 at real size (issue 22)\")")
	calib := fs.String("calib-images", "", "with --quantize: what to calibrate on, footage like what the model will see: a folder of images (.png/.jpg, searched recursively) or a video")
	calibN := fs.Int("calib-count", 16, "with --quantize: calibration images used, spread evenly over the folder or the video")
	root, pargs, err := c.parse(fs, args, true, "want --checkpoint (or --from-bundle) and --out")
	if err != nil {
		return err
	}
	switch {
	case *c.fromBundle != "" && (*name != "" || *fixture != "" || *noFixture || *tta != ""):
		return fmt.Errorf("%w: --from-bundle keeps the bundle's name and fixture (no --name, --fixture-image, --no-fixture or --tta-scales)", errUsage)
	case *quant != "" && *quant != "int8":
		return fmt.Errorf("%w: --quantize %q (want int8)", errUsage, *quant)
	case *quant != "" && *calib == "":
		return fmt.Errorf("%w: --quantize int8 needs --calib-images: a folder of images or a video like the footage the model will run on (e.g. a recording from the camera)", errUsage)
	case *quant != "" && *calibN < 1:
		return fmt.Errorf("%w: --calib-count %d: want at least 1", errUsage, *calibN)
	case *quant == "" && *calib != "":
		return fmt.Errorf("%w: --calib-images without --quantize", errUsage)
	}
	if *name != "" {
		pargs = append(pargs, "--name", *name)
	}
	if *fixture != "" {
		img, err := filepath.Abs(*fixture)
		if err != nil {
			return err
		}
		pargs = append(pargs, "--fixture-image", img)
	}
	if *noFixture {
		pargs = append(pargs, "--no-fixture")
	}
	if *tta != "" {
		pargs = append(pargs, "--tta-scales", *tta)
	}
	if *quant == "" {
		return runPython(root, append(append([]string{"-m", "htc.export"}, pargs...), fs.Args()...), stdout, stderr, nil)
	}
	return exportQuantized(root, pargs, fs.Args(), *calib, *calibN, stdout, stderr)
}

// exportQuantized exports the float bundle into a temporary folder beside
// --out, then writes its INT8 form to --out (python3 -m htc.quantize).
func exportQuantized(root string, pargs, extra []string, calib string, n int, stdout, stderr io.Writer) error {
	var out string
	for i := 0; i+1 < len(pargs); i++ {
		if pargs[i] == "--out" {
			out = pargs[i+1]
		}
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".float-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// the calibration frames are checked (a video's decoded) before the
	// float export's minute, so bad input fails at once
	images, err := calibrationImages(calib, n, filepath.Join(tmp, "calib"))
	if err != nil {
		return err
	}
	bundle := filepath.Join(tmp, "bundle")
	fargs := append([]string(nil), pargs...)
	for i := range fargs {
		if i > 0 && fargs[i-1] == "--out" {
			fargs[i] = bundle
		}
	}
	if err := runPython(root, append(append([]string{"-m", "htc.export"}, fargs...), extra...), stdout, stderr, nil); err != nil {
		return err
	}
	return runPython(root, []string{"-m", "htc.quantize", "--bundle", bundle, "--out", out,
		"--calib-images", images, "--num-images", fmt.Sprint(n)}, stdout, stderr, nil)
}

// calibrationImages is the folder htc.quantize calibrates on: calib itself
// when it is a folder holding images, or n frames of the video calib,
// spread evenly over it, written as PNG into dir.
func calibrationImages(calib string, n int, dir string) (string, error) {
	abs, err := filepath.Abs(calib)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("%w: --calib-images: %v", errUsage, err)
	}
	if st.IsDir() {
		found := false
		err := filepath.WalkDir(abs, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".png", ".jpg", ".jpeg":
				found = !e.IsDir()
			}
			if found {
				return fs.SkipAll
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("%w: --calib-images: %v", errUsage, err)
		}
		if !found {
			return "", fmt.Errorf("%w: --calib-images %s: no .png/.jpg images in the folder (or give a video)", errUsage, calib)
		}
		return abs, nil
	}
	if err := pipeline.SaveCalibrationFrames(abs, n, dir); err != nil {
		if errors.Is(err, pipeline.ErrUnreadableVideo) {
			return "", fmt.Errorf("%w: --calib-images %s is %v", errUsage, calib, err)
		}
		return "", err
	}
	return dir, nil
}

// importCmd writes an mmdetection checkpoint in the training module's own
// format, to fine-tune from (train --load-from) or to keep beside its config.
func importCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("import", "import --checkpoint MMDET.pth --out OURS.pth [flags]", stderr)
	var c checkpointFlags
	c.register(fs, "training checkpoint (.pth) to write")
	root, pargs, err := c.parse(fs, args, false, "want --checkpoint and --out, and no other arguments")
	if err != nil {
		return err
	}
	return runPython(root, append([]string{"-m", "htc.mmdet_checkpoint"}, pargs...), stdout, stderr, nil)
}
