"""Stopping on SIGINT/SIGTERM with a checkpoint, checkpoints every N steps, and
--resume from the middle of an epoch (one process in-process; two ranks under
htc.torchrun in a subprocess)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from htc import train
from htc.model.detector import HTC
from train_testutil import read_log, steps, write_config

torch.set_num_threads(1)

TRAINING_DIR = Path(__file__).resolve().parents[1]


def run_args(cfg, work, *extra):
    return ["--config", str(cfg), "--work-dir", str(work), "--log-interval", "1", *extra]


def signal_at_call(monkeypatch, n, signum=signal.SIGINT):
    """Send ``signum`` to this process during the ``n``-th loss computation."""
    real_loss = HTC.loss
    calls = []

    def loss(self, images, targets):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signum)
        return real_loss(self, images, targets)

    monkeypatch.setattr(HTC, "loss", loss)
    return calls


def test_signal_checkpoints_mid_epoch_and_resume_continues_exactly(tmp_path, monkeypatch, capsys):
    # 2 epochs x 2 steps; uninterrupted, then stopped by SIGINT during step 3
    # (epoch 2, step 1) with checkpoint_steps=1, then resumed
    cfg = write_config(tmp_path / "tiny.yaml", tmp_path / "data", train={"checkpoint_steps": 1})
    base = tmp_path / "base"
    assert train.main(run_args(cfg, base)) == 0
    records = read_log(base)
    mid = [r for r in records if "epoch_iter" in r]
    # every step writes latest.pth, except an epoch's last (the epoch's own checkpoint)
    assert [(r["epoch"], r["epoch_iter"], r["iters"]) for r in mid] == [(1, 1, 2), (2, 1, 2)]

    work = tmp_path / "work"
    calls = signal_at_call(monkeypatch, 3)
    capsys.readouterr()
    assert train.main(run_args(cfg, work, "--progress-json")) == 130
    out, err = capsys.readouterr()
    assert len(calls) == 3  # the step in progress finished; no further step began
    last = json.loads(out.splitlines()[-1])
    assert last == {"interrupted": "SIGINT", "checkpoint": str(work / "latest.pth"), "epoch": 2, "epoch_iter": 1,
                    "iters": 2}
    assert "SIGINT: stopped after epoch 2/2 step 1/2" in err and "--resume continues" in err
    ckpt = torch.load(work / "latest.pth", map_location="cpu")
    assert (ckpt["epoch"], ckpt["epoch_iter"], ckpt["iteration"]) == (1, 1, 3)
    assert not (work / "epoch_2.pth").exists()

    monkeypatch.undo()
    capsys.readouterr()
    assert train.main(run_args(cfg, work, "--resume")) == 0
    assert "resuming at epoch 2 step 2/2 (step 4 overall)" in capsys.readouterr().err
    want = steps(records)
    got = steps(read_log(work))
    # the interrupted run logged steps 1-3, the resumed one step 4: the same lr and losses
    assert [(r["epoch"], r["iter"]) for r in got] == [(r["epoch"], r["iter"]) for r in want]
    for g, w in zip(got, want):
        assert g["lr"] == w["lr"] and g["loss"] == w["loss"], (g, w)
    a = torch.load(work / "epoch_2.pth", map_location="cpu")["model"]
    b = torch.load(base / "epoch_2.pth", map_location="cpu")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_on_an_epochs_last_step_keeps_the_epoch_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", tmp_path / "data")
    work = tmp_path / "work"
    signal_at_call(monkeypatch, 2, signal.SIGTERM)
    assert train.main(run_args(cfg, work)) == 130
    assert "SIGTERM: stopped after epoch 1/2 step 2/2" in capsys.readouterr().err
    ckpt = torch.load(work / "latest.pth", map_location="cpu")
    assert (ckpt["epoch"], ckpt["epoch_iter"], ckpt["iteration"]) == (1, 0, 2)
    assert (work / "epoch_1.pth").is_file()


def test_a_second_signal_stops_at_once():
    stop = train.StopRequest()
    stop.armed = True
    stop._handle(signal.SIGINT, None)
    assert stop.name == "SIGINT"
    stop._handle(signal.SIGINT, None)  # within the debounce window: the same request
    stop._at -= train.StopRequest.DEBOUNCE_S + 1
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        train.StopRequest()._handle(signal.SIGINT, None)  # not armed: Python's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ok, timeout: float, step: float = 0.05) -> bool:
    """Polls ok() until it holds or timeout seconds pass; a test's clock, not a bare sleep."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def processes_mentioning(text: str):
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if text in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_sigint_to_torchrun_stops_every_rank_with_one_checkpoint(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", tmp_path / "data", data={"num_train_images": 8},
                       train={"epochs": 50})
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=str(TRAINING_DIR), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "htc.torchrun", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "htc.train", *run_args(cfg, work, "--progress-json", "--device", "cpu")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # wait for the first step, then interrupt the launcher alone (as htcstream train does)
        first = proc.stdout.readline()
        assert '"iter": 1,' in first, first + proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "the workers stopped on SIGINT" in err and "Traceback" not in err, err[-3000:]
    stopped = [json.loads(line) for line in out.splitlines() if "interrupted" in line]
    assert len(stopped) == 1 and stopped[0]["checkpoint"] == str(work / "latest.pth")  # rank 0 alone reports
    ckpt = torch.load(work / "latest.pth", map_location="cpu")
    assert ckpt["iteration"] == (ckpt["epoch"] * 2 + ckpt["epoch_iter"]) >= 1
    assert len(ckpt["rng"]) == 2 and ckpt["meta"]["world_size"] == 2
    # the launcher has exited; its workers' zombies may take a moment to be reaped
    assert wait_until(lambda: processes_mentioning(str(work)) == [], timeout=10), processes_mentioning(str(work))
