package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/htcstream/htcstream/internal/pyenv"
)

// TestMain lets a test run this package's binary as htcstream itself
// (HTCSTREAM_AS_MAIN=1), so a test can signal a whole htcstream process.
func TestMain(m *testing.M) {
	if os.Getenv("HTCSTREAM_AS_MAIN") == "1" {
		os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func trainingAbs(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../../training")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// The closing summary names and orders the loss terms exactly as the
// trainer's own log line does (htc.train.status_line).
func TestTrainSummaryIsTheTrainersStatusLine(t *testing.T) {
	rec := `{"epoch": 3, "epochs": 12, "iter": 20, "iters": 128, "loss": {"loss_rpn_cls": 0.69, "loss_rpn_bbox": 0.03125,` +
		` "loss_semantic_seg": 1.5, "s0.loss_cls": 0.8, "s0.loss_bbox": 0.25, "s0.loss_mask": 0.61234, "s1.loss_cls": 0.4},` +
		` "loss_total": 4.31359, "lr": 0.00002, "s_per_iter": 0.9, "eta_s": 1380.0}`
	py := exec.Command(python, "-c", "import json, sys\nfrom htc.train import status_line\nprint(status_line(json.loads(sys.argv[1])))", rec)
	py.Env = pyenv.Env(os.Environ(), trainingAbs(t))
	out, err := py.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	want := strings.TrimSpace(string(out))
	got := trainStatus([]byte(rec))
	if got != want {
		t.Fatalf("summary %q\ntrainer %q", got, want)
	}
	if !strings.Contains(got, "(rpn_cls 0.6900 rpn_bbox 0.0312 semantic_seg 1.5000 s0.cls 0.8000 s0.bbox 0.2500 s0.mask 0.6123 s1.cls") {
		t.Fatalf("terms out of the trainer's order or names: %s", got)
	}

	var buf bytes.Buffer
	lines := strings.Join([]string{
		rec,
		`{"checkpoint": "w/latest.pth", "epoch": 4, "epoch_iter": 50, "iters": 128}`,
		`{"checkpoint": "w/epoch_4.pth", "epoch": 4}`,
		`{"interrupted": "SIGINT", "checkpoint": "w/latest.pth", "epoch": 5, "epoch_iter": 3, "iters": 128}`,
	}, "\n")
	if err := relayTrainProgress(strings.NewReader(lines), &buf, nil); err != nil {
		t.Fatal(err)
	}
	// the trainer says each checkpoint and the stop on its stderr: the relay adds only the summary
	if buf.String() != "last step: "+want+"\n" {
		t.Errorf("relay output:\n%s", buf.String())
	}
}

func TestTrainDefaultsToOneProcessPerCore(t *testing.T) {
	_, out, _ := call("train", "-h") // help goes to stdout
	if !strings.Contains(out, fmt.Sprintf("(default %d)", runtime.NumCPU())) || !strings.Contains(out, "CPU cores") {
		t.Fatalf("train -h:\n%s", out)
	}
}

// Ctrl-C on htcstream train (two ranks under torchrun) reaches the trainer:
// it finishes its step, writes latest.pth and every process of it exits;
// htcstream exits with 130. A relative data.root lands in the directory the
// command ran in, not in training/.
func TestTrainInterruptLeavesACheckpointAndNoProcess(t *testing.T) {
	dir := t.TempDir()
	cfg, err := filepath.Abs("../../configs/model/htc_tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// the trainer's flags directly, no "--"; a log line at each epoch's end only,
	// so the stop usually falls between two and the summary must still name it
	cmd := exec.Command(os.Args[0], "train", "--config", cfg, "--work-dir", "work", "--nproc", "2",
		"--epochs", "50", "--log-interval", "4", "--set", "data.root=data", "--set", "data.num_train_images=8",
		"--set", "data.num_val_images=0", "--set", "train.batch_size=2", "--set", "data.img_scales=[[64, 64]]",
		"--set", "data.test_scale=[64, 64]", "--set", "train.evaluate=false", "--set", "train.lr=0.02")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HTCSTREAM_AS_MAIN=1", "HTCSTREAM_TRAINING="+trainingAbs(t), "OMP_NUM_THREADS=1")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var stderr bytes.Buffer
	started := make(chan struct{})
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(errPipe)
		once := false
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), " iter 4/4 ") {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-copied:
		t.Fatalf("the trainer ended before its first step:\n%s", stderr.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("no first step in 3 minutes:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { <-copied; waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("htcstream train still running 2 minutes after SIGINT:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	work := filepath.Join(dir, "work")
	latest := filepath.Join(work, "latest.pth")
	// each checkpoint is reported once, by the trainer; the summary names the step it stopped at
	m := regexp.MustCompile(`SIGINT: stopped after epoch (\d+)/50 step (\d)/4; saved (\S+);`).FindStringSubmatch(stderr.String())
	if m == nil || m[3] != latest {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if n := strings.Count(stdout.String()+stderr.String(), latest); n != 1 {
		t.Errorf("%s reported %d times:\n%s\n%s", latest, n, stdout.String(), stderr.String())
	}
	for e := 1; e < 50; e++ {
		if n := strings.Count(stdout.String()+stderr.String(), fmt.Sprintf("epoch_%d.pth", e)); n > 1 {
			t.Errorf("epoch_%d.pth reported %d times", e, n)
		}
	}
	if want := fmt.Sprintf("last step: epoch %s/50 iter %s/4 loss ", m[1], m[2]); !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
	}
	for _, want := range []string{"htcstream: stopping: the trainer finishes its step", "htcstream train: interrupted",
		"htc.data.synthetic: generating the synthetic set (8 train images, seed 0) in " + filepath.Join(dir, "data")} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if b, err := os.ReadFile(filepath.Join(work, "config.yaml")); err != nil || !strings.Contains(string(b), "lr: 0.02\n") {
		t.Errorf("--set train.lr=0.02 did not reach the trainer's config.yaml (%v):\n%s", err, b)
	}
	for _, p := range []string{filepath.Join(work, "latest.pth"), filepath.Join(dir, "data", "annotations", "instances_train.json")} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if left := processesMentioning(work); len(left) > 0 {
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("processes still running after htcstream exited: %v", left)
	}
}

// processesMentioning lists the pids whose command line contains s.
func processesMentioning(s string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Words the trainer would not get are refused before Python starts, saying
// how to give them; so are node settings that cannot work.
func TestTrainRefusesStrayWordsAndBadNodes(t *testing.T) {
	cfg, _ := filepath.Abs("../../configs/model/htc_tiny.yaml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "train.lr=0.02", "train.epochs=3"}, `unexpected argument "train.epochs=3" (give each value its own --set`},
		{[]string{"--resume", "w/latest.pth"}, `unexpected argument "w/latest.pth"`},
		{[]string{"--nnodes", "2"}, "--nnodes 2 needs --master ADDR:PORT"},
		{[]string{"--nnodes", "2", "--node-rank", "2", "--master", "10.0.0.1:29500"}, "--node-rank 2: want 0..1"},
		{[]string{"--nnodes", "2", "--master", "10.0.0.1"}, `--master "10.0.0.1": want ADDR:PORT`},
		{[]string{"--nnodes", "2", "--master", "10.0.0.1:http"}, "the port must be a number"},
	} {
		code, _, errOut := call(append([]string{"train", "--config", cfg}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, want 2 and one line with %q:\n%s", tc.args, code, tc.want, errOut)
		}
	}
}

// A cluster's variables stand in for the flags; flags win.
func TestTrainNodesFromTheEnvironment(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	cluster := env(map[string]string{"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500", "NODE_RANK": "1", "WORLD_SIZE": "8"})
	for _, tc := range []struct {
		args   []string
		getenv func(string) string
		nproc  int
		want   trainNodes
		err    string
	}{
		{nil, env(nil), 2, trainNodes{count: 1}, ""},
		{nil, cluster, 4, trainNodes{count: 2, rank: 1, addr: "10.0.0.1", port: "29500"}, ""},
		{nil, cluster, 8, trainNodes{count: 1, rank: 0}, "--node-rank 1: want 0..0"},
		{nil, cluster, 3, trainNodes{}, "WORLD_SIZE=8 (processes on all nodes) is not a multiple of --nproc 3"},
		{[]string{"--nnodes", "4", "--node-rank", "3", "--master", "[fd00::1]:1234"}, cluster, 2,
			trainNodes{count: 4, rank: 3, addr: "fd00::1", port: "1234"}, ""},
		// WORLD_SIZE alone (no master) says nothing about nodes
		{nil, env(map[string]string{"WORLD_SIZE": "2"}), 1, trainNodes{count: 1}, ""},
		{nil, env(map[string]string{"MASTER_ADDR": "h"}), 1, trainNodes{}, "set both"},
	} {
		fs := newFlags("train", "", io.Discard)
		nnodes := fs.Int("nnodes", 1, "")
		rank := fs.Int("node-rank", 0, "")
		master := fs.String("master", "", "")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		got, err := resolveNodes(fs, *nnodes, *rank, *master, tc.nproc, tc.getenv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v nproc %d: error %v, want %q", tc.args, tc.nproc, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v nproc %d: %+v, %v; want %+v", tc.args, tc.nproc, got, err, tc.want)
		}
	}
}

// Two machines on loopback, two processes each: node 0 by flags, node 1 by a
// cluster's environment variables, each in a folder of its own as if they
// shared no file system. All four ranks train one DDP run; node 0 writes the
// checkpoint, node 1 makes its own copy of the synthetic set.
func TestTrainTwoNodesOnLoopback(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for about a minute")
	}
	cfg, _ := filepath.Abs("../../configs/model/htc_tiny.yaml")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"train", "--config", cfg, "--work-dir", "work", "--nproc", "2", "--epochs", "1", "--log-interval", "1",
		// 8 images, 4 a step over the 4 ranks: 2 steps
		"--set", "data.root=data", "--set", "data.num_train_images=8", "--set", "data.num_val_images=0",
		"--set", "train.batch_size=4", "--set", "data.img_scales=[[64, 64]]", "--set", "data.test_scale=[64, 64]",
		"--set", "train.evaluate=false"}
	type node struct {
		dir            string
		cmd            *exec.Cmd
		stdout, stderr bytes.Buffer
	}
	nodes := make([]*node, 2)
	for r := range nodes {
		n := &node{dir: t.TempDir()}
		a := args
		env := append(os.Environ(), "HTCSTREAM_AS_MAIN=1", "HTCSTREAM_TRAINING="+trainingAbs(t), "OMP_NUM_THREADS=1")
		if r == 0 {
			a = append(a, "--nnodes", "2", "--node-rank", "0", "--master", fmt.Sprintf("127.0.0.1:%d", port))
		} else {
			env = append(env, "MASTER_ADDR=127.0.0.1", fmt.Sprintf("MASTER_PORT=%d", port), "NODE_RANK=1", "WORLD_SIZE=4")
		}
		n.cmd = exec.Command(os.Args[0], a...)
		n.cmd.Dir, n.cmd.Env = n.dir, env
		n.cmd.Stdout, n.cmd.Stderr = &n.stdout, &n.stderr
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer n.cmd.Process.Kill()
		nodes[r] = n
	}
	for r, n := range nodes {
		done := make(chan error, 1)
		go func() { done <- n.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("node %d: %v\nstdout:\n%s\nstderr:\n%s", r, err, n.stdout.String(), n.stderr.String())
			}
		case <-time.After(4 * time.Minute):
			t.Fatalf("node %d still training after 4 minutes:\n%s", r, n.stderr.String())
		}
	}
	n0, n1 := nodes[0], nodes[1]
	for _, want := range []string{"htcstream train: node 0 of 2, 2 process(es) here, 4 in all", "(1 images x 4 process(es))"} {
		if !strings.Contains(n0.stderr.String(), want) {
			t.Errorf("node 0's stderr lacks %q:\n%s", want, n0.stderr.String())
		}
	}
	if !strings.Contains(n0.stdout.String(), "last step: epoch 1/1 iter 2/2 ") {
		t.Errorf("node 0's stdout:\n%s", n0.stdout.String())
	}
	for _, want := range []string{fmt.Sprintf("htcstream train: node 1 of 2, 2 process(es) here, 4 in all; master 127.0.0.1:%d", port),
		"generating the synthetic set (8 train images, seed 0) in " + filepath.Join(n1.dir, "data")} {
		if !strings.Contains(n1.stderr.String(), want) {
			t.Errorf("node 1's stderr lacks %q:\n%s", want, n1.stderr.String())
		}
	}
	if _, err := os.Stat(filepath.Join(n1.dir, "work", "latest.pth")); err == nil {
		t.Error("node 1 wrote a checkpoint: only rank 0 (node 0) writes")
	}

	// The checkpoint: the random states of 4 distinct ranks, 2 steps, and
	// weights that load strictly into the model its config describes.
	check := `import json, sys, torch
from htc.config import config_from_dict
from htc.model import build_model
ck = torch.load(sys.argv[1], map_location="cpu")
m = build_model(config_from_dict(ck["config"]))
m.load_state_dict(ck["model"], strict=True)
print(json.dumps({"ranks": len(ck["rng"]), "distinct": len({bytes(s["torch"].numpy()) for s in ck["rng"]}),
  "world": ck["meta"]["world_size"], "epoch": ck["epoch"], "iteration": ck["iteration"],
  "finite": all(bool(torch.isfinite(v).all()) for v in ck["model"].values() if v.is_floating_point())}))`
	py := exec.Command(python, "-c", check, filepath.Join(n0.dir, "work", "epoch_1.pth"))
	py.Env = pyenv.Env(os.Environ(), trainingAbs(t))
	out, err := py.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := `{"ranks": 4, "distinct": 4, "world": 4, "epoch": 1, "iteration": 2, "finite": true}`
	if strings.TrimSpace(string(out)) != want {
		t.Errorf("checkpoint %s, want %s", out, want)
	}
}
