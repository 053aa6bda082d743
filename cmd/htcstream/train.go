package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/htcstream/htcstream/internal/pyenv"
)

const python = pyenv.Interpreter

func trainCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "train --config CONFIG [flags] [-- trainer flags]", stderr)
	config := fs.String("config", "", "model/data/train YAML (configs/model/*.yaml)")
	workDir := fs.String("work-dir", "", "checkpoints and logs (default: the trainer's, work_dirs/<config name>)")
	resume := fs.Bool("resume", false, "continue from the work dir's latest.pth")
	loadFrom := fs.String("load-from", "", "fine-tune from this whole model: an htc.train checkpoint or a released mmdetection HTC .pth\n"+
		"(class-count layers that differ from the config are re-initialised; not with --resume)")
	nproc := fs.Int("nproc", runtime.NumCPU(), "training processes, DDP through torchrun when > 1 (gloo on CPU, nccl on GPU);\n"+
		"the default is this machine's CPU cores: one PyTorch process keeps about one core busy. With CUDA\n"+
		"give the number of GPUs. train.batch_size must be divisible by it")
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
		// a free port, not torchrun's fixed default, so two trainings on one machine do not collide
		port, err := freePort()
		if err != nil {
			return err
		}
		targs = append([]string{"-m", "htc.torchrun", "--nnodes=1", fmt.Sprintf("--nproc_per_node=%d", *nproc),
			"--master_addr=127.0.0.1", fmt.Sprintf("--master_port=%d", port)}, targs...)
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
	if *loadFrom != "" {
		if *resume {
			return fmt.Errorf("%w: --load-from starts a new run, --resume continues one: give one of them", errUsage)
		}
		lf, err := filepath.Abs(*loadFrom)
		if err != nil {
			return err
		}
		if _, err := os.Stat(lf); err != nil {
			return fmt.Errorf("--load-from: %w", err)
		}
		targs = append(targs, "--load-from", lf)
	}
	targs = append(targs, fs.Args()...)
	return runPython(root, targs, stdout, stderr, relayTrainProgress)
}

// trainingDir finds the project's training/ folder: $HTCSTREAM_TRAINING when
// set, else next to the executable (bin/htcstream) or above the working
// directory.
func trainingDir() (string, error) {
	if d := os.Getenv("HTCSTREAM_TRAINING"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "htc", "train.py")); err != nil {
			return "", fmt.Errorf("HTCSTREAM_TRAINING=%s is not the training module's folder (no htc/train.py)", d)
		}
		return filepath.Abs(d)
	}
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

// errInterrupted: the command stopped on SIGINT/SIGTERM (exit status 130).
var errInterrupted = errors.New("interrupted")

// runPython runs the training module with Debian's python. It runs in the
// user's working directory, with dir (training/) on PYTHONPATH, so relative
// paths in configs and flags (data.root, work_dirs/...) mean what they mean
// where the user is. stdout goes through relay when given (it turns the
// trainer's JSON records into progress), stderr passes through.
//
// The child gets a process group of its own: a terminal's Ctrl-C reaches
// htcstream alone, which passes SIGINT/SIGTERM on to the child once per
// signal (the trainer finishes its step and writes a checkpoint; htc.torchrun
// hands the signal to its workers), waits for it and returns errInterrupted.
// A third signal kills the child's process group. If htcstream itself is
// killed, the child gets SIGTERM (Pdeathsig).
func runPython(dir string, args []string, stdout, stderr io.Writer, relay func(io.Reader, io.Writer, io.Writer) error) error {
	if _, err := os.Stat(python); err != nil {
		return fmt.Errorf("%s is missing: run scripts/setup", python)
	}
	cmd := exec.Command(python, args...)
	cmd.Env = pyenv.Env(os.Environ(), dir)
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
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
	// Pdeathsig follows the thread that started the child: keep it until Wait.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", python, err)
	}
	var interrupted atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go forwardSignals(cmd.Process, sig, done, &interrupted, stderr)
	var rerr error
	if relayErr != nil {
		rerr = <-relayErr
	}
	err := cmd.Wait()
	if interrupted.Load() {
		return errInterrupted
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() == 2 {
			// The module's way of failing on input: it printed its one-line
			// reason on stderr, and a second line would only repeat it.
			return errReported
		}
		return fmt.Errorf("%s exited with code %d", strings.Join(args[:2], " "), ee.ExitCode())
	}
	if err != nil {
		return err
	}
	return rerr
}

// forwardSignals passes each SIGINT/SIGTERM on to the child; the third kills
// the child's process group.
func forwardSignals(p *os.Process, sig <-chan os.Signal, done <-chan struct{}, interrupted *atomic.Bool, stderr io.Writer) {
	for n := 1; ; n++ {
		select {
		case <-done:
			return
		case s := <-sig:
			interrupted.Store(true)
			switch n {
			case 1:
				fmt.Fprintln(stderr, "htcstream: stopping: the trainer finishes its step and saves a checkpoint (interrupt again to stop at once)")
				p.Signal(s)
			case 2:
				fmt.Fprintln(stderr, "htcstream: stopping at once (a third interrupt kills the trainer)")
				p.Signal(s)
			default:
				syscall.Kill(-p.Pid, syscall.SIGKILL)
			}
		}
	}
}

// freePort is a TCP port on 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("no free port for torchrun: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// relayTrainProgress reads the trainer's --progress-json records. The
// trainer draws its own progress (a status block on a terminal, a line every
// --log-interval steps elsewhere) on the stderr it shares with us, so the
// per-step records are not drawn again; checkpoints, evaluations and a stop
// on a signal become lines of their own on stdout, and the last step's losses
// a summary.
func relayTrainProgress(r io.Reader, stdout, _ io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var last []byte
	for sc.Scan() {
		line := sc.Bytes()
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			fmt.Fprintln(stdout, string(line))
			continue
		}
		switch {
		case rec["interrupted"] != nil:
			fmt.Fprintf(stdout, "%v: stopped after epoch %v step %v/%v; checkpoint %v (htcstream train --resume continues from the next step)\n",
				rec["interrupted"], rec["epoch"], rec["epoch_iter"], rec["iters"], rec["checkpoint"])
		case rec["checkpoint"] != nil && rec["epoch_iter"] != nil:
			fmt.Fprintf(stdout, "epoch %v step %v/%v: checkpoint %v\n", rec["epoch"], rec["epoch_iter"], rec["iters"], rec["checkpoint"])
		case rec["checkpoint"] != nil:
			fmt.Fprintf(stdout, "epoch %v: checkpoint %v\n", rec["epoch"], rec["checkpoint"])
		case rec["eval"] != nil:
			b, _ := json.Marshal(rec["eval"])
			fmt.Fprintf(stdout, "epoch %v: evaluation %s\n", rec["epoch"], b)
		case rec["iter"] != nil:
			last = append(last[:0], line...)
		default:
			fmt.Fprintln(stdout, string(line))
		}
	}
	if last != nil {
		fmt.Fprintln(stdout, "last step:", trainStatus(last))
	}
	return sc.Err()
}

// trainStatus is a progress record as the trainer's log line starts
// (htc.train.status_line): the same loss names (loss_ dropped wherever it
// stands: rpn_cls, s0.mask) in the trainer's order.
func trainStatus(line []byte) string {
	var rec struct {
		Epoch, Epochs, Iter, Iters float64
		Loss                       json.RawMessage
		LossTotal                  float64 `json:"loss_total"`
		LR                         float64 `json:"lr"`
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return string(line)
	}
	var terms []string
	dec := json.NewDecoder(bytes.NewReader(rec.Loss))
	if t, err := dec.Token(); err == nil && t == json.Delim('{') {
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				break
			}
			var v float64
			if err := dec.Decode(&v); err != nil {
				break
			}
			terms = append(terms, fmt.Sprintf("%s %.4f", strings.ReplaceAll(fmt.Sprint(k), "loss_", ""), v))
		}
	}
	return fmt.Sprintf("epoch %.0f/%.0f iter %.0f/%.0f loss %.4f (%s) lr %.3g", rec.Epoch, rec.Epochs,
		rec.Iter, rec.Iters, rec.LossTotal, strings.Join(terms, " "), rec.LR)
}
