package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
	for _, want := range []string{"epoch 4 step 50/128: checkpoint w/latest.pth\n", "epoch 4: checkpoint w/epoch_4.pth\n",
		"SIGINT: stopped after epoch 5 step 3/128; checkpoint w/latest.pth (htcstream train --resume continues",
		"last step: " + want} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("relay output lacks %q:\n%s", want, buf.String())
		}
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
	cmd := exec.Command(os.Args[0], "train", "--config", cfg, "--work-dir", "work", "--nproc", "2", "--",
		"--epochs", "50", "--log-interval", "1", "--set", "data.root=data", "--set", "data.num_train_images=4",
		"--set", "data.num_val_images=0", "--set", "train.batch_size=2", "--set", "data.img_scales=[[64, 64]]",
		"--set", "data.test_scale=[64, 64]", "--set", "train.evaluate=false")
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
			if !once && strings.Contains(sc.Text(), " iter 1/2 ") {
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
	if !strings.Contains(stdout.String(), "SIGINT: stopped after epoch") ||
		!strings.Contains(stdout.String(), "checkpoint "+filepath.Join(work, "latest.pth")) {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	for _, want := range []string{"htcstream: stopping: the trainer finishes its step", "htcstream train: interrupted"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
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
