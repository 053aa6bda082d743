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
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/htcstream/htcstream/internal/pyenv"
)

const python = pyenv.Interpreter

func trainCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", "train --config CONFIG [flags] [-- other trainer flags]", stderr)
	config := fs.String("config", "", "model/data/train YAML (configs/model/*.yaml)")
	workDir := fs.String("work-dir", "", "checkpoints and logs (default: the trainer's, work_dirs/<config name>)")
	resume := fs.String("resume", "", "continue from the work dir's latest.pth, or from CKPT with --resume=CKPT")
	fs.Lookup("resume").NoOptDefVal = "latest"
	loadFrom := fs.String("load-from", "", "fine-tune from this whole model: an htc.train checkpoint or a released mmdetection HTC .pth\n"+
		"(class-count layers that differ from the config are re-initialised; not with --resume)")
	sets := fs.StringArray("set", nil, "override a config value, KEY=VALUE (repeatable): --set train.lr=0.02 --set data.root=data/mine")
	epochs := fs.Int("epochs", 0, "override train.epochs")
	logInterval := fs.Int("log-interval", 20, "steps between progress lines when stderr is not a terminal")
	device := fs.String("device", "auto", "auto (CUDA if available), cpu or cuda")
	nproc := fs.Int("nproc", runtime.NumCPU(), "training processes on this machine, DDP through torchrun when > 1 (gloo on CPU, nccl on GPU);\n"+
		"the default is this machine's CPU cores: one PyTorch process keeps about one core busy. With CUDA\n"+
		"give the number of GPUs. train.batch_size must be divisible by all processes of all nodes")
	nnodes := fs.Int("nnodes", 1, "machines taking part; run the same command on each with its own --node-rank\n"+
		"(default: WORLD_SIZE / --nproc when WORLD_SIZE and MASTER_ADDR are set)")
	nodeRank := fs.Int("node-rank", 0, "this machine's number, 0..nnodes-1; node 0 writes the checkpoints (default: NODE_RANK)")
	master := fs.String("master", "", "ADDR:PORT of node 0, reachable from every node, PORT free there\n"+
		"(default: MASTER_ADDR:MASTER_PORT; with one node a free port on 127.0.0.1)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *config == "" || *nproc < 1 {
		fs.Usage()
		return fmt.Errorf("%w: want --config and --nproc >= 1", errUsage)
	}
	// Words before "--" are not the trainer's: they are a mistake such as
	// "--set a=1 b=2" (each value needs its own --set) or "--resume CKPT".
	rest := fs.Args()
	before := len(rest)
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		before = dash
	}
	if before > 0 {
		return fmt.Errorf("%w: unexpected argument %q (give each value its own --set, a checkpoint as --resume=CKPT; "+
			"other trainer flags go after --)", errUsage, rest[0])
	}
	rest = rest[before:]
	nodes, err := resolveNodes(fs, *nnodes, *nodeRank, *master, *nproc, os.Getenv)
	if err != nil {
		return err
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
	if *nproc > 1 || nodes.count > 1 {
		addr, port := nodes.addr, nodes.port
		if addr == "" {
			// a free port, not torchrun's fixed default, so two trainings on one machine do not collide
			p, err := freePort()
			if err != nil {
				return err
			}
			addr, port = "127.0.0.1", strconv.Itoa(p)
		}
		targs = append([]string{"-m", "htc.torchrun", fmt.Sprintf("--nnodes=%d", nodes.count),
			fmt.Sprintf("--node_rank=%d", nodes.rank), fmt.Sprintf("--nproc_per_node=%d", *nproc),
			"--master_addr=" + addr, "--master_port=" + port}, targs...)
		if nodes.count > 1 {
			fmt.Fprintf(stderr, "htcstream train: node %d of %d, %d process(es) here, %d in all; master %s\n",
				nodes.rank, nodes.count, *nproc, nodes.count**nproc, net.JoinHostPort(addr, port))
		}
	}
	if *workDir != "" {
		wd, err := filepath.Abs(*workDir)
		if err != nil {
			return err
		}
		targs = append(targs, "--work-dir", wd)
	}
	if *resume != "" {
		if *resume == "latest" {
			targs = append(targs, "--resume")
		} else {
			ck, err := filepath.Abs(*resume)
			if err != nil {
				return err
			}
			targs = append(targs, "--resume", ck)
		}
	}
	if *loadFrom != "" {
		if *resume != "" {
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
	for _, s := range *sets {
		targs = append(targs, "--set", s)
	}
	if fs.Changed("epochs") {
		targs = append(targs, "--epochs", strconv.Itoa(*epochs))
	}
	if fs.Changed("log-interval") {
		targs = append(targs, "--log-interval", strconv.Itoa(*logInterval))
	}
	if fs.Changed("device") {
		targs = append(targs, "--device", *device)
	}
	targs = append(targs, rest...)
	return runPython(root, targs, stdout, stderr, relayTrainProgress)
}

// trainNodes is where this machine stands in a (multi-node) training run.
type trainNodes struct {
	count, rank int
	addr, port  string // node 0's rendezvous; empty: pick one on loopback
}

// resolveNodes reads --nnodes, --node-rank and --master, each falling back
// to the variables a cluster's launcher (or torchrun's users) set:
// MASTER_ADDR, MASTER_PORT, NODE_RANK, and WORLD_SIZE, which counts
// processes (torch's meaning), so the node count is WORLD_SIZE / nproc.
func resolveNodes(fs *pflag.FlagSet, nnodes, rank int, master string, nproc int, getenv func(string) string) (trainNodes, error) {
	envInt := func(name string) (int, bool, error) {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, false, fmt.Errorf("%w: %s=%q is not a number", errUsage, name, v)
		}
		return n, true, nil
	}
	n := trainNodes{count: nnodes, rank: rank}
	if !fs.Changed("master") {
		if a, p := getenv("MASTER_ADDR"), getenv("MASTER_PORT"); a != "" || p != "" {
			if a == "" || p == "" {
				return n, fmt.Errorf("%w: MASTER_ADDR=%q and MASTER_PORT=%q: set both, or give --master ADDR:PORT", errUsage, a, p)
			}
			master = net.JoinHostPort(a, p)
		}
	}
	if !fs.Changed("nnodes") && master != "" {
		ws, ok, err := envInt("WORLD_SIZE")
		if err != nil {
			return n, err
		}
		if ok {
			if ws < 1 || ws%nproc != 0 {
				return n, fmt.Errorf("%w: WORLD_SIZE=%d (processes on all nodes) is not a multiple of --nproc %d", errUsage, ws, nproc)
			}
			n.count = ws / nproc
		}
	}
	if !fs.Changed("node-rank") {
		r, ok, err := envInt("NODE_RANK")
		if err != nil {
			return n, err
		}
		if ok {
			n.rank = r
		}
	}
	if n.count < 1 {
		return n, fmt.Errorf("%w: --nnodes %d: want 1 or more", errUsage, n.count)
	}
	if n.rank < 0 || n.rank >= n.count {
		return n, fmt.Errorf("%w: --node-rank %d: want 0..%d for %d node(s)", errUsage, n.rank, n.count-1, n.count)
	}
	if master != "" {
		host, port, err := net.SplitHostPort(master)
		if err != nil || host == "" {
			return n, fmt.Errorf("%w: --master %q: want ADDR:PORT, e.g. 10.0.0.1:29500", errUsage, master)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return n, fmt.Errorf("%w: --master %q: the port must be a number in 1..65535", errUsage, master)
		}
		n.addr, n.port = host, port
	} else if n.count > 1 {
		return n, fmt.Errorf("%w: --nnodes %d needs --master ADDR:PORT (node 0's address and a free port there) "+
			"or MASTER_ADDR and MASTER_PORT", errUsage, n.count)
	}
	return n, nil
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
		if slices.Contains(tried, filepath.Join(dir, "training")) {
			return "", false
		}
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
	return "", fmt.Errorf("the training module is not here (looked for %s); run from the htcstream project, or set $HTCSTREAM_TRAINING to its training folder", strings.Join(tried, ", "))
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
// --log-interval steps elsewhere) on the stderr it shares with us, and says
// there, once, each checkpoint it writes, each evaluation and a stop on a
// signal; so those records are not drawn again here. What the relay adds is
// the closing summary of the last step (the trainer writes a record for the
// step it stopped at, so that is the true last step).
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
		case rec["interrupted"] != nil, rec["checkpoint"] != nil, rec["eval"] != nil:
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
