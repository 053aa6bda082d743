// Command htcstream segments live and recorded video with Hybrid Task Cascade
// and shows the annotated stream in a browser. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/htcstream/htcstream/pipeline"
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
		{"setup", "install the ONNX Runtime library and the default model for this user (an installed binary)", setupCmd},
		{"version", "print htcstream's version and the native libraries it loaded", versionCmd},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help":
		usage(stdout)
		return 0
	case "help":
		// help COMMAND is COMMAND -h, as in go and git
		if len(args) < 2 {
			usage(stdout)
			return 0
		}
		if !slices.ContainsFunc(commands(), func(c command) bool { return c.name == args[1] }) {
			fmt.Fprintf(stderr, "htcstream help: unknown command %q (run 'htcstream help')\n", args[1])
			return 2
		}
		args = []string{args[1], "-h"}
	case "--version", "-version":
		args = []string{"version"}
	}
	helpOut = stdout
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, pflag.ErrHelp):
			return 0
		case errors.Is(err, errReported):
			return 1
		case errors.Is(err, errUsage), errors.Is(err, pipeline.ErrConfig):
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return 2
		case errors.Is(err, errInterrupted), errors.Is(err, pipeline.ErrInterrupted):
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return interruptedStatus(err)
		default:
			fmt.Fprintf(stderr, "htcstream %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "htcstream: unknown command %q (run 'htcstream help')\n", args[0])
	return 2
}

// interruptedStatus is the shell's convention for a command a signal
// stopped, 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM,
// 129 for SIGHUP; 130 when the signal is not known.
func interruptedStatus(err error) int {
	var ie *pipeline.InterruptedError
	if errors.As(err, &ie) {
		if s, ok := ie.Signal.(syscall.Signal); ok {
			return 128 + int(s)
		}
	}
	return 130
}

// helpOut is where -h/--help prints a command's flags: standard output,
// as asked for; misuse prints them on standard error.
var helpOut io.Writer = os.Stdout

func usage(w io.Writer) {
	fmt.Fprintln(w, "htcstream segments video with Hybrid Task Cascade and previews it in a browser.")
	fmt.Fprintln(w, "\nUsage: htcstream <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'htcstream help <command>' or 'htcstream <command> -h' for a command's flags.")
}

// newFlags makes a flag set whose errors come back as values, never exits.
// Flags may come before, between or after the arguments (pflag); a single
// dash before a long name (-model) is taken as two, as Go's flag package
// accepted it.
func newFlags(name, synopsis string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags reports errors, in one line
	fs.SortFlags = false
	usageTo := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: htcstream %s\n\nFlags:\n", synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fs.Usage = func() { usageTo(stderr) }
	helpers[fs] = func() { usageTo(helpOut) }
	return fs
}

// helpers print a flag set's usage for -h/--help.
var helpers = map[*pflag.FlagSet]func(){}

// parseFlags parses args; a bad flag is a usage error, -h/--help prints the
// flags on standard output.
func parseFlags(fs *pflag.FlagSet, args []string) error {
	// pflag prints the whole usage on any mistake; one line says more
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(longDashes(fs, args))
	fs.Usage = usage
	if errors.Is(err, pflag.ErrHelp) {
		helpers[fs]()
		return err
	}
	if err != nil {
		return fmt.Errorf("%w: %v (see -h)", errUsage, err)
	}
	return nil
}

// longDashes turns -name into --name for the set's long flags, up to "--".
func longDashes(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if fs.Lookup(name) != nil {
				out[i] = "-" + a
			}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
