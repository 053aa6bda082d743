// Command htcstream segments live and recorded video with Hybrid Task Cascade
// and shows the annotated stream in a browser. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/htcstream/htcstream/infer"
)

// version is the project's version; release builds set it with
// -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// errUsage marks errors whose message is a usage problem: exit code 2.
var errUsage = errors.New("usage")

// errReported is a failure whose one-line reason was already printed (by the
// training module's Python): exit code 1, nothing more said.
var errReported = errors.New("failed (reason above)")

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "segment sources and write the annotated video, detections and/or a browser preview", runCmd},
		{"eval", "COCO box and mask AP of a model on a COCO-format set or a video with ground truth", evalCmd},
		{"bench", "time each step of the model (graphs and Go) per frame", benchCmd},
		{"train", "train an HTC model with the training module (PyTorch), relaying its progress", trainCmd},
		{"export", "export a training or mmdetection HTC checkpoint as a model bundle", exportCmd},
		{"import", "convert a released mmdetection HTC checkpoint into a training checkpoint (to fine-tune)", importCmd},
		{"version", "print htcstream's version and the native libraries it loaded", versionCmd},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errReported):
			return 1
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return 2
		case errors.Is(err, errInterrupted):
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return 130
		default:
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "htcstream: unknown command %q (run 'htcstream help')\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "htcstream segments video with Hybrid Task Cascade and previews it in a browser.")
	fmt.Fprintln(w, "\nUsage: htcstream <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'htcstream <command> -h' for a command's flags.")
}

// newFlags makes a flag set whose errors come back as values, never exits.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: htcstream %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a bad flag is a usage error (flag has printed it).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// parseScale reads LONGxSHORT (either order) as a test scale.
func parseScale(s string) (infer.Scale, error) {
	a, b, ok := strings.Cut(strings.ToLower(s), "x")
	if !ok {
		return infer.Scale{}, fmt.Errorf("%q is not LONGxSHORT", s)
	}
	long, err1 := strconv.Atoi(a)
	short, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || long <= 0 || short <= 0 {
		return infer.Scale{}, fmt.Errorf("%q is not LONGxSHORT with positive numbers", s)
	}
	return infer.Scale{Long: max(long, short), Short: min(long, short)}, nil
}
