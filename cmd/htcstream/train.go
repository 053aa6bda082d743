package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// python is Debian's interpreter: a python3 earlier on PATH (pyenv, venv)
// usually lacks Debian's PyTorch.
const python = "/usr/bin/python3"

func trainCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "train --config CONFIG [flags] [-- trainer flags]", stderr)
	config := fs.String("config", "", "model/data/train YAML (configs/model/*.yaml)")
	workDir := fs.String("work-dir", "", "checkpoints and logs (default: the trainer's, work_dirs/<config name>)")
	resume := fs.Bool("resume", false, "continue from the work dir's latest.pth")
	nproc := fs.Int("nproc", 1, "training processes (DDP through torchrun: gloo on CPU, nccl on GPU)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *config == "" || *nproc < 1 {
		fs.Usage()
		return fmt.Errorf("%w: want --config and --nproc >= 1", errUsage)
	}
	root, err := trainingDir()
	if err != nil {
		return err
	}
	cfg, err := filepath.Abs(*config)
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg); err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	targs := []string{"-m", "htc.train", "--config", cfg, "--progress-json"}
	if *nproc > 1 {
		targs = append([]string{"-m", "htc.torchrun", fmt.Sprintf("--nproc_per_node=%d", *nproc)}, targs...)
	}
	if *workDir != "" {
		wd, err := filepath.Abs(*workDir)
		if err != nil {
			return err
		}
		targs = append(targs, "--work-dir", wd)
	}
	if *resume {
		targs = append(targs, "--resume")
	}
	targs = append(targs, fs.Args()...)
	return runPython(root, targs, stdout, stderr, relayTrainProgress)
}

func exportCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("export", "export --checkpoint CKPT --out BUNDLE [-- exporter flags]", stderr)
	ckpt := fs.String("checkpoint", "", "training checkpoint (.pth)")
	out := fs.String("out", "", "bundle directory to write")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *ckpt == "" || *out == "" {
		fs.Usage()
		return fmt.Errorf("%w: want --checkpoint and --out", errUsage)
	}
	root, err := trainingDir()
	if err != nil {
		return err
	}
	c, err := filepath.Abs(*ckpt)
	if err != nil {
		return err
	}
	o, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if _, err := os.Stat(c); err != nil {
		return fmt.Errorf("--checkpoint: %w", err)
	}
	return runPython(root, append([]string{"-m", "htc.export", "--checkpoint", c, "--out", o}, fs.Args()...), stdout, stderr, nil)
}

// trainingDir finds the project's training/ folder next to the executable
// (bin/htcstream) or above the working directory.
func trainingDir() (string, error) {
	var tried []string
	check := func(dir string) (string, bool) {
		p := filepath.Join(dir, "training", "htc", "train.py")
		tried = append(tried, filepath.Join(dir, "training"))
		if _, err := os.Stat(p); err == nil {
			return filepath.Join(dir, "training"), true
		}
		return "", false
	}
	if exe, err := os.Executable(); err == nil {
		if d, ok := check(filepath.Dir(filepath.Dir(exe))); ok {
			return d, nil
		}
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			if d, ok := check(dir); ok {
				return d, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	return "", fmt.Errorf("the training module is not here (looked for %s); run from the htcstream project", strings.Join(tried, ", "))
}

// runPython runs the training module with Debian's python in dir; stdout
// goes through relay when given (it turns the trainer's JSON records into
// progress), stderr passes through.
func runPython(dir string, args []string, stdout, stderr io.Writer, relay func(io.Reader, io.Writer, io.Writer) error) error {
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("%s is missing: run scripts/setup", python)
	}
	cmd := exec.Command(python, args...)
	cmd.Dir = dir
	cmd.Stderr = stderr
	var relayErr chan error
	if relay != nil {
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		relayErr = make(chan error, 1)
		go func() { relayErr <- relay(pipe, stdout, stderr) }()
	} else {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", python, err)
	}
	var rerr error
	if relayErr != nil {
		rerr = <-relayErr
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		// The trainer printed its own one-line reason on stderr.
		return fmt.Errorf("%s exited with code %d", strings.Join(args[:2], " "), ee.ExitCode())
	}
	if err != nil {
		return err
	}
	return rerr
}

// relayTrainProgress reads the trainer's --progress-json records. The
// trainer draws its own progress (a status block on a terminal, a line every
// --log-interval steps elsewhere) on the stderr it shares with us, so the
// per-step records are not drawn again; checkpoints and evaluations become
// lines of their own on stdout, and the last step's losses a summary.
func relayTrainProgress(r io.Reader, stdout, _ io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last map[string]any
	for sc.Scan() {
		line := sc.Bytes()
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			fmt.Fprintln(stdout, string(line))
			continue
		}
		switch {
		case rec["checkpoint"] != nil:
			fmt.Fprintf(stdout, "epoch %v: checkpoint %v\n", rec["epoch"], rec["checkpoint"])
		case rec["eval"] != nil:
			b, _ := json.Marshal(rec["eval"])
			fmt.Fprintf(stdout, "epoch %v: evaluation %s\n", rec["epoch"], b)
		case rec["iter"] != nil:
			last = rec
		default:
			fmt.Fprintln(stdout, string(line))
		}
	}
	if last != nil {
		fmt.Fprintln(stdout, "last step:", trainStatus(last))
	}
	return sc.Err()
}

func trainStatus(rec map[string]any) string {
	num := func(k string) float64 { v, _ := rec[k].(float64); return v }
	var terms []string
	if loss, ok := rec["loss"].(map[string]any); ok {
		keys := make([]string, 0, len(loss))
		for k := range loss {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if v, ok := loss[k].(float64); ok {
				terms = append(terms, fmt.Sprintf("%s %.3f", strings.TrimPrefix(k, "loss_"), v))
			}
		}
	}
	return fmt.Sprintf("epoch %.0f/%.0f iter %.0f/%.0f loss %.4f lr %.5f (%s)", num("epoch"), num("epochs"),
		num("iter"), num("iters"), num("loss_total"), num("lr"), strings.Join(terms, " "))
}
